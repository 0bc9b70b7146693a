"""Terminal escape injection: text from models, providers and the database
reaches the terminal only as text. Escape sequences (clear screen, hidden
text, OSC 52 clipboard writes, window titles), other control characters and
C1 code points are removed from everything shown, while what is stored (and
the answer written to a pipe) keeps every byte."""

import asyncio
import functools
import io
import json
import random
import re
import sqlite3
from types import SimpleNamespace

import llm
import pytest

from llm_consortium.faces.display import Progress
from llm_consortium.core.safetext import printable, single_line
import helpers
from helpers import db_rows
from llm_consortium.evaluation.simulator import arbiter_xml

# One of each kind of thing a terminal acts on rather than shows.
HOSTILE = (
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b[8mhidden\x1b[28m"  # concealed text
    "\x1b]52;c;cm0gLXJmIH4=\x07"  # OSC 52: write the clipboard
    "\x1b]0;pwned\x1b\\"  # window title, ESC \ terminated
    "\x9b2J\x9d0;c1 title\x07"  # 8-bit CSI and OSC
    "\x1bc\x1b(0"  # reset, line-drawing character set
    "\x07\x08\x7f\x85"  # bell, backspace, DEL, C1 next line
    "safe\rFORGED"  # a carriage return overwriting a line
)
SHOWN = "hiddensafeFORGED"  # what is left of HOSTILE to read

# What must never reach the terminal from outside: any C0 control but
# newline and tab, DEL, C1. Our own styling (SGR sequences) is allowed.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
OUR_STYLING = re.compile(r"\x1b\[[0-9;]*m")


def assert_safe(text: str) -> None:
    assert "\x1b[8m" not in text  # concealed text (our styling never conceals)
    leftover = CONTROL.search(OUR_STYLING.sub("", text))
    assert leftover is None, f"{leftover.group()!r} reaches the terminal in {text!r}"


def shown(text: str) -> str:
    """What a reader sees: the text without our styling."""
    return OUR_STYLING.sub("", text)


# As on a terminal: click strips some escape sequences from output that is not one.
invoke = functools.partial(helpers.invoke, color=True)


@pytest.fixture
def hostile(sim):
    """A member, a failing member and an arbiter whose every text is hostile."""
    sim.add("m1", reply="Member one " + HOSTILE)
    sim.add("m2", status=400, error_message="Bad request " + HOSTILE)
    sim.add("judge", reply="Before the tags " + HOSTILE + "\n" + arbiter_xml(
        "The answer " + HOSTILE, 0.9, analysis="Analysis " + HOSTILE, dissent="Dissent " + HOSTILE))
    return sim


RUN = ["consortium", "q", "-m", "m1", "-m", "m2", "--arbiter", "judge"]


# printable


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain text", "plain text"),
        ("line one\nline two\tand a tab", "line one\nline two\tand a tab"),
        ("héllo wörld, naïve café, e\u0301", "héllo wörld, naïve café, e\u0301"),
        ("日本語のテキスト，中文，한국어", "日本語のテキスト，中文，한국어"),
        ("مرحبا שלום", "مرحبا שלום"),
        ("👍🏽 👨\u200d👩\u200d👧 🇫🇷", "👍🏽 👨\u200d👩\u200d👧 🇫🇷"),  # joiners and flags kept
        ("\u00a0no-break\u2003em space", "\u00a0no-break\u2003em space"),
        # CSI
        ("\x1b[2Jcleared", "cleared"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[8mhidden\x1b[28m", "hidden"),
        ("\x1b[?25lno cursor\x1b[?1049h", "no cursor"),
        ("\x1b[1;31;4mstyled", "styled"),
        ("\x1b[3Fup", "up"),
        # OSC, BEL or ESC \ terminated
        ("\x1b]52;c;cm0gLXJmIH4=\x07after", "after"),
        ("\x1b]0;title\x1b\\after", "after"),
        ("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
        # DCS, SOS, PM, APC
        ("\x1bP1$r0m\x1b\\x", "x"),
        ("\x1bXsos\x1b\\\x1b^pm\x1b\\\x1b_apc\x1b\\x", "x"),
        # two-byte and character set sequences
        ("\x1bc\x1b7saved\x1b8\x1b(0\x1b)B", "saved"),
        # 8-bit C1 forms
        ("\x9b2Jcleared", "cleared"),
        ("\x9d0;title\x07after", "after"),
        ("\x9d0;title\x9cafter", "after"),
        ("\x90dcs\x9cafter", "after"),
        ("\x85next\x8dline\x9f", "nextline"),
        # other C0 controls and DEL
        ("a\x07b\x08c\x00d\x7fe\x0bf\x0cg\x1ch", "abcdefgh"),
        # carriage returns
        ("safe\rFORGED", "safeFORGED"),
        ("one\r\ntwo\r\n", "one\ntwo\n"),
        # incomplete sequences: the escape goes, the rest is text
        ("\x1b]0;no terminator", "0;no terminator"),
        ("ends with \x1b", "ends with "),
        ("\x1b\x1b[2J", ""),
        ("\x1b[", ""),
        # lone surrogates
        ("a\ud800b\udfffc", "a\ufffdb\ufffdc"),
    ],
)
def test_printable(text, expected):
    assert printable(text) == expected


def test_printable_leaves_no_control_in_any_mix():
    alphabet = ["\x1b", "[", "]", "\\", "\x07", "\x9b", "\x9c", "\x9d", "\x90", "\r", "\n", "\t", "\x00", "\x7f",
                "P", "_", "^", "X", "0", ";", "2", "J", "m", "c", "(", "é", "日", "👍", " "]
    rng = random.Random(8)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert CONTROL.search(printable(text)) is None, repr(text)


def test_printable_chunk_by_chunk_is_safe_too():
    """A sequence split between two chunks cannot be completed on the terminal."""
    for cut in range(1, len(HOSTILE)):
        assert CONTROL.search(printable(HOSTILE[:cut]) + printable(HOSTILE[cut:])) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("one\ntwo\tthree", "one two three"),
        ("  \x1b]0;t\x07 spaced \r\n out ", "spaced out"),
        ("日本語 👍", "日本語 👍"),
    ],
)
def test_single_line(text, expected):
    assert single_line(text) == expected


# consortium run: raw view, summary, errors


def test_run_stderr_shows_no_escapes(hostile):
    result = invoke(*RUN)
    assert result.exit_code == 0, result.stderr
    assert_safe(result.stderr)
    err = shown(result.stderr)
    assert "Member one " + SHOWN in err  # raw view: a member's answer
    assert "Before the tags " + SHOWN in err  # the arbiter's raw reply
    assert "Bad request hidden" in err  # a provider's error (flattened to one line when it arrived)
    assert "Analysis: Analysis " + SHOWN in err and "Dissent: Dissent " + SHOWN in err  # summary


def test_stored_text_keeps_every_byte(hostile, tmp_path):
    out = tmp_path / "result.json"
    invoke(*RUN, "--output", str(out))
    text = db_rows("select text from consortium_calls where model = 'm1'")[0]["text"]
    assert text == "Member one " + HOSTILE
    error = db_rows("select error from consortium_calls where model = 'm2'")[0]["error"]
    assert "\x1b]52;c;" in error and "\x9b2J" in error
    synthesis, analysis = db_rows("select synthesis, analysis from consortium_rounds")[0].values()
    assert synthesis == "The answer " + HOSTILE and analysis == "Analysis " + HOSTILE
    saved = json.loads(out.read_text())
    assert saved["synthesis"]["synthesis"] == "The answer " + HOSTILE


def test_answer_to_a_pipe_is_unchanged(hostile):
    result = invoke(*RUN, "--no-raw", "-q", color=False)  # click would strip some sequences from a pipe
    assert result.stdout == "The answer " + HOSTILE + "\n"


def test_json_output_escapes_controls(hostile):
    result = invoke(*RUN, "--json")
    assert CONTROL.search(result.stdout) is None
    assert json.loads(result.stdout)["synthesis"]["synthesis"] == "The answer " + HOSTILE
    for command in (["runs", "--json"], ["inspect", "--json"], ["list", "--json"]):
        assert CONTROL.search(invoke("consortium", *command).stdout) is None


def fail_every_member(sim):
    for name in ("m1", "m2"):
        sim.add(name, status=400, error_message=f"{name} down " + HOSTILE)


def test_error_line_shows_no_escapes(hostile):
    fail_every_member(hostile)
    result = invoke(*RUN, "--no-raw")
    assert result.exit_code == 1
    assert_safe(result.stderr)
    last = shown(result.stderr).strip().splitlines()[-1]
    assert last.startswith("Error: Every member failed") and "m1 down hidden" in last


def test_arbiter_failure_shows_no_escapes(hostile):
    hostile.add("judge", status=400, error_message="Arbiter down " + HOSTILE)
    result = invoke(*RUN)
    assert_safe(result.stderr)
    assert "Arbiter down hidden" in shown(result.stderr)


def test_vote_tally_shows_no_escapes(sim):
    sim.add_many(["m1", "m2"], reply="<answer>42 " + HOSTILE + "</answer>")
    sim.add("judge", reply=arbiter_xml("unused", 0.9))
    result = invoke("consortium", "q", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--method", "vote", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert_safe(result.stderr)
    assert "Vote: 42" in shown(result.stderr)


# inspect, runs, list, show


def test_inspect_shows_no_escapes(hostile):
    invoke("consortium", "q " + HOSTILE, "-m", "m1", "-m", "m2", "--arbiter", "judge")
    result = invoke("consortium", "inspect")
    assert result.exit_code == 0
    assert_safe(result.stdout)
    out = shown(result.stdout)
    assert "Prompt: q " + SHOWN in out and "Member one " + SHOWN in out and "Bad request hidden" in out
    assert "Analysis: Analysis " + SHOWN in out and "The answer " + SHOWN in out
    fail_every_member(hostile)
    invoke(*RUN)
    failed = invoke("consortium", "inspect")
    assert_safe(failed.stdout)
    assert "Error: Every member failed" in shown(failed.stdout) and "m2 down hidden" in shown(failed.stdout)


def store_hostile_config(name):
    """A saved consortium written by hand (or an old version): nothing checked it."""
    config = {"models": ["m1 " + HOSTILE], "arbiter": "judge " + HOSTILE, "confidence_threshold": 0.8,
              "max_iterations": 3, "system_prompt": "Be brief.\n" + HOSTILE}
    conn = sqlite3.connect(llm.user_dir() / "logs.db")
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS consortium_configs (name TEXT PRIMARY KEY, config TEXT, "
                     "created_at TEXT)")
        conn.execute("INSERT INTO consortium_configs VALUES (?, ?, '2024-11-01')", (name, json.dumps(config)))
    conn.close()


def test_list_and_show_stored_names_show_no_escapes(sim):
    name = "evil\x1b]0;pwned\x07\x9b2J\nforged: line"
    store_hostile_config(name)
    listing = invoke("consortium", "list")
    assert listing.exit_code == 0
    assert_safe(listing.stdout)
    (line,) = listing.stdout.splitlines()  # a newline in a name forges no second entry
    assert line.startswith("evil forged: line: m1 ") and SHOWN in line
    shown_config = invoke("consortium", "show", name)
    assert shown_config.exit_code == 0
    assert_safe(shown_config.stdout)
    assert "Consortium: evil" in shown_config.stdout and "Arbiter: judge " + SHOWN in shown_config.stdout
    assert "System prompt: Be brief.\n" + SHOWN in shown_config.stdout
    assert db_rows("select name from consortium_configs") == [{"name": name}]


def test_runs_shows_no_escapes(hostile):
    invoke(*RUN, "--no-raw")
    conn = sqlite3.connect(llm.user_dir() / "logs.db")
    with conn:
        conn.execute("UPDATE consortium_runs SET name = ?, prompt = ?",
                     ("evil " + HOSTILE + "\nforged run", "ask " + HOSTILE + "\nforged prompt"))
    conn.close()
    result = invoke("consortium", "runs")
    assert_safe(result.stdout)
    line = result.stdout.splitlines()[1]
    assert "  evil " + SHOWN[:8] in line and line.endswith("ask " + SHOWN + " forged prompt")


# save


@pytest.mark.parametrize(
    "name",
    ["evil\x1b[2J", "bell\x07", "title\x1b]0;x\x07", "c1\x9b2J", "c1\x85", "cr\rname", "tab\tname",
     "new\nline", "del\x7f", "bidi\u202eevil", "zero\u200bwidth"],
)
def test_save_refuses_unprintable_names(sim, name):
    sim.add("m1")
    sim.add("judge")
    result = invoke("consortium", "save", name, "-m", "m1", "--arbiter", "judge")
    assert result.exit_code == 1
    assert_safe(result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: A consortium name cannot contain")
    path = llm.user_dir() / "logs.db"
    assert not path.exists() or db_rows("select name from sqlite_master where name = 'consortium_configs'") == [] \
        or db_rows("select * from consortium_configs") == []


def test_save_accepts_unicode_names(sim):
    sim.add("m1")
    sim.add("judge")
    result = invoke("consortium", "save", "équipe-日本-🚀", "-m", "m1", "--arbiter", "judge")
    assert result.exit_code == 0, result.stderr
    assert "équipe-日本-🚀: m1 → judge" in invoke("consortium", "list").stdout


# live progress


def test_progress_lines_show_no_escapes():
    stream = io.StringIO()
    progress = Progress(stream, "judge " + HOSTILE)

    async def events():
        progress.member_retry(None, 1, "m1 " + HOSTILE, 1, "RateLimitError: " + HOSTILE, 0.5)
        failed = SimpleNamespace(model="m2", instance=1, cancelled=False, error="Broken:\n" + HOSTILE)
        progress.member_finished(None, 1, failed, "q")
        progress.draw()

    asyncio.run(events())
    text = stream.getvalue()
    assert_safe(text)
    assert "retrying in 0.5 s · RateLimitError: " + SHOWN in text
    assert "failed: Broken: " + SHOWN in shown(text)  # on its own line: redrawing counts lines
    assert len(text.splitlines()) == progress.lines_drawn == 4


def run_with_pty(args, pty_for):
    """Run `llm` in this process with one of stdout/stderr shown as on a
    terminal (LLM_CONSORTIUM_TERMINAL) and the other on a pipe; returns
    (stdout, stderr). (It used a raw pseudo-terminal in a process of its own.)"""
    result = invoke(*args, terminal=pty_for)
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


def test_answer_on_a_terminal_shows_no_escapes(hostile):
    out, _ = run_with_pty([*RUN, "--no-raw"], pty_for="stdout")
    assert CONTROL.search(out) is None
    assert out.startswith("The answer ") and out.endswith("FORGED\n")


def test_live_progress_on_a_terminal_shows_no_escapes(hostile):
    hostile.add("judge", reply=arbiter_xml("Done.", 0.9), latency=0.3)
    _, err = run_with_pty([*RUN, "--no-raw"], pty_for="stderr")
    redraw = re.compile(r"\x1b\[\d+F\x1b\[J")  # the progress block's own redrawing
    assert_safe(redraw.sub("", err))
    assert "m2 #1: failed: BadRequestError: Error code: 400 - Bad request " in shown(err)
