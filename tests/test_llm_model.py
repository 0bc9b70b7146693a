"""A saved consortium as a first-class llm model (issue 10): `llm -m NAME`
and `llm chat -m NAME` show the run on a terminal, pass `-o` options on to
the members, refuse `--key`, and report usage with `-u`. Driven through
llm's real CLI, in-process, with stdout and stderr shown as on a terminal
where that is what a test is about (LLM_CONSORTIUM_TERMINAL)."""

import re
from typing import Optional

import click
import llm
import pytest
from pydantic import Field

from helpers import db_rows, invoke
from llm_consortium import ConsortiumOrchestrator
from llm_consortium.core.record import record_from_result
from llm_consortium.faces.display import summary_line
from llm_consortium.evaluation.simulator import arbiter_xml

ANSWER = "The answer is 42."


def on_terminal(args, *, stdout_too=True, input=None):
    """Run `llm` in this process with stderr shown as on a terminal
    (LLM_CONSORTIUM_TERMINAL), and stdout on the same one (as in a shell)
    or on a pipe. Returns (terminal text, piped stdout)."""
    result = invoke(*args, input=input, color=True, terminal="stdout,stderr" if stdout_too else "stderr")
    assert result.exit_code == 0, result.output
    return (result.output, "") if stdout_too else (result.stderr, result.stdout)


def screen(text: str) -> list[str]:
    """What a terminal shows once ``text`` has been written to it: the
    cursor movements the progress display uses (carriage return, newline,
    N lines up, erase below) are applied, styling is dropped."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[(\d*)([A-Za-z])|(\r)|(\n)|([^\x1b\r\n]+)", text):
        number, command, carriage_return, newline, chars = token
        if command == "F":
            row, col = max(0, row - int(number or 1)), 0
        elif command == "J":
            lines[row] = lines[row][:col]
            del lines[row + 1:]
        elif carriage_return:
            col = 0
        elif newline:
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif chars:
            lines[row] = lines[row][:col] + chars + lines[row][col + len(chars):]
            col += len(chars)
    return [line for line in lines if line]


@pytest.fixture
def saved(sim):
    """A saved consortium `c` of two simulated members and a judge."""
    sim.add("m1", reply="Member one says 42.", latency=0.3)
    sim.add("m2", reply="Member two says 42.", latency=0.3)
    sim.add("judge", reply=arbiter_xml(ANSWER, 0.9, analysis="Both agree."))
    assert invoke("consortium", "save", "c", "-m", "m1", "-m", "m2", "--arbiter", "judge").exit_code == 0
    return sim


SUMMARY = re.compile(r"^Confidence 0\.90 · (?:\d of 2 agree|agreement unknown), 2 of 2 answered(?: \(by [a-z' ]+\))? · "
                     r"1 round · "
                     r"[\d,]+ tokens · cost unknown: 3 calls unpriced · \d+\.\d s · run (?P<run>[0-9a-f]{8})$")


# progress and summary on a terminal


def test_llm_prompt_shows_progress_then_the_answer_then_one_summary_line(saved):
    terminal, _ = on_terminal(["-m", "c", "What is 6*7?"])
    assert "  m1 #1: " in terminal and "  arbiter judge: " in terminal  # the live block was drawn
    progress, answer, summary = screen(terminal)
    assert progress == "Round 1: 2/2 members answered"  # the live block, collapsed before the answer
    assert answer == ANSWER
    run_id = SUMMARY.match(summary)["run"]
    assert db_rows("select id from consortium_runs")[0]["id"].startswith(run_id)


def test_answer_on_a_pipe_summary_on_the_terminal_without_a_run_id_when_not_recorded(saved):
    terminal, stdout = on_terminal(["-m", "c", "--no-log", "What is 6*7?"], stdout_too=False)
    assert stdout == ANSWER + "\n"
    progress, summary = screen(terminal)
    assert progress == "Round 1: 2/2 members answered"
    assert summary.startswith("Confidence 0.90 · ") and "run " not in summary and summary.endswith(" s")


def test_llm_chat_shows_progress_and_a_summary_after_each_answer(saved):
    terminal, _ = on_terminal(["chat", "-m", "c"], input="hello\nsecond turn\nquit\n")
    assert terminal.count("  arbiter judge: ") >= 2  # live progress on each turn
    shown = screen(terminal)
    turns = [i for i, line in enumerate(shown) if line == ANSWER]
    assert len(turns) == 2
    for i in turns:
        assert shown[i - 1].endswith("Round 1: 2/2 members answered")
        assert SUMMARY.match(shown[i + 1])
    assert shown[-1] == "> quit"  # the next prompt on a line of its own (with what was typed, echoed)


def test_no_progress_or_summary_without_a_terminal(saved):
    result = invoke("-m", "c", "What is 6*7?")
    assert result.exit_code == 0 and result.stdout == ANSWER + "\n" and result.stderr == ""


def test_progress_false_turns_them_off(saved):
    terminal, stdout = on_terminal(["-m", "c", "-o", "progress", "false", "q"], stdout_too=False)
    assert terminal == "" and stdout == ANSWER + "\n"
    assert "progress" not in saved.calls("m1")[0].body  # a consortium option, not the members'


def test_summary_says_when_the_threshold_was_not_reached(saved):
    saved.add("judge", reply=arbiter_xml(ANSWER, 0.5))
    result = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge", max_iterations=1).orchestrate_sync("q")
    summary = click.unstyle(summary_line(record_from_result(result)))
    assert summary.startswith("Confidence 0.50 · ") and "below the 0.80 threshold" in summary


def test_summary_says_when_no_judge_decided(saved):
    saved.add("judge", status=500, error_message="down")
    result = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge", attempts=1).orchestrate_sync("q")
    # Two answers worded differently and no judge to group them: no majority, no verdict.
    assert result["synthesis"]["synthesis"] == "" and result["metadata"]["status"] == "no_verdict"
    assert [c["members"] for c in result["synthesis"]["candidates"]] == [["m1#1"], ["m2#1"]]
    line = click.unstyle(summary_line(record_from_result(result)))
    assert "no_verdict: no verdict: the arbiter failed" in line and "Member two says 42." in line
    saved.add("m2", reply="Member one says 42.")
    result = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge", attempts=1).orchestrate_sync("q")
    assert result["synthesis"]["synthesis"] == "Member one says 42." and result["metadata"]["status"] == "degraded"
    assert "no judge decided" in summary_line(record_from_result(result))


# -o options of the members


class Flavoured(llm.Model):
    """A local model whose options are not OpenAI's: it answers with the
    flavour it was given."""

    model_id = "flavoured"

    class Options(llm.Options):
        flavour: Optional[str] = Field(None, description="A flavour")

    def execute(self, prompt, stream, response, conversation):
        yield f"flavour={prompt.options.flavour}"


@pytest.fixture
def flavoured(saved):
    class Plugin:
        @llm.hookimpl
        def register_models(self, register):
            register(Flavoured())

    llm.pm.register(Plugin(), name="flavoured")
    invoke("consortium", "save", "mixed", "-m", "m1", "-m", "flavoured", "--arbiter", "judge")
    yield saved
    llm.pm.unregister(name="flavoured")


def test_member_options_reach_every_member_that_accepts_them(flavoured):
    result = invoke("-m", "mixed", "-o", "temperature", "0.3", "-o", "flavour", "mint", "q")
    assert result.exit_code == 0, result.stderr
    assert flavoured.calls("m1")[0].body["temperature"] == 0.3
    assert "flavour" not in flavoured.calls("m1")[0].body
    assert "flavour=mint" in flavoured.calls("judge")[0].user  # what the local member answered
    assert "temperature" not in flavoured.calls("judge")[0].body  # members only, not the arbiter


@pytest.mark.parametrize("command", [["-m", "c"], ["consortium", "run", "-m", "m1", "-m", "m2", "--arbiter", "judge"]])
def test_member_options_from_llm_and_from_consortium_run(saved, command):
    result = invoke(*command, "-o", "temperature", "0.3", "-o", "max_iterations", "1", "q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(ANSWER + "\n")
    assert [call.body.get("temperature") for call in saved.calls("m1") + saved.calls("m2")] == [0.3, 0.3]
    assert "temperature" not in saved.calls("judge")[0].body


@pytest.mark.parametrize("command", [["-m", "c"], ["consortium", "run", "-m", "m1", "-m", "m2", "--arbiter", "judge"]])
@pytest.mark.parametrize("option, message", [
    (["bogus", "1"], "No member model accepts the option bogus"),
    (["arbiter", "m2"], "No member model accepts the option arbiter"),  # not a way round the saved settings
    (["temperature", "abc"], "-o temperature abc for m1: Input should be a valid number"),
])
def test_a_bad_option_is_one_line_before_any_call(saved, command, option, message):
    result = invoke(*command, "-o", *option, "q")
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert saved.requests == []


def test_a_bad_consortium_option_in_run_is_one_line(saved):
    result = invoke("consortium", "run", "-m", "m1", "--arbiter", "judge", "-o", "max_iterations", "x", "q")
    assert result.exit_code == 1 and saved.requests == []
    assert result.stderr == "Error: -o max_iterations x: Input should be a valid integer, unable to parse string " \
                            "as an integer\n"


def test_chat_options_reach_the_members_and_a_bad_one_is_one_line(saved):
    chat = invoke("chat", "-m", "c", "-o", "temperature", "0.3", input="hello\nagain\nquit\n")
    assert chat.exit_code == 0, chat.stderr
    assert [call.body.get("temperature") for call in saved.calls("m1")] == [0.3, 0.3]
    bad = invoke("chat", "-m", "c", "-o", "bogus", "1", input="hello\nquit\n")
    assert bad.exit_code == 1
    assert bad.stderr.strip().splitlines() == ["Error: No member model accepts the option bogus "
                                               "(see llm models --options)"]
    assert len(saved.calls("m1")) == 2


# --key


def test_key_is_refused_in_one_line(saved):
    result = invoke("-m", "c", "--key", "sk-secret-abcdefgh", "q")
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: --key") and "llm keys set" in line and "sk-secret" not in line
    assert saved.requests == []
    chat = invoke("chat", "-m", "c", "--key", "x", input="hello\nquit\n")
    assert chat.exit_code == 1 and chat.stderr.strip().splitlines() == [line]
    assert saved.requests == []


# -u


def test_usage_is_the_whole_consortium_total(saved):
    result = invoke("-m", "c", "-u", "q")
    (run,) = db_rows("select input_tokens, output_tokens from consortium_runs")
    assert run["output_tokens"] > 0
    assert f"Token usage: {run['input_tokens']:,} input, {run['output_tokens']:,} output\n" in result.stderr


def test_unknown_usage_is_not_shown_as_zero(saved):
    for name in ("m1", "m2", "judge"):
        saved.add(name, reply=arbiter_xml(ANSWER, 0.9) if name == "judge" else "42", no_usage=True)
    result = invoke("-m", "c", "-u", "q")
    assert result.exit_code == 0 and "0 input" not in result.stderr and "0 output" not in result.stderr
    saved.add("m1", reply="42")  # now one call of three reports its usage
    result = invoke("-m", "c", "-u", "q")
    assert re.search(r'Token usage: \d+ input, \d+ output, \{"calls_without_usage": 2\}', result.stderr)


def test_a_run_that_fails_in_chat_ends_it_in_one_line_and_is_recorded(sim):
    sim.add("bad", status=500)
    sim.add("judge", reply=arbiter_xml(ANSWER, 0.9))
    assert invoke("consortium", "save", "c", "-m", "bad", "--arbiter", "judge", "--attempts", "1").exit_code == 0
    chat = invoke("chat", "-m", "c", input="hello\nquit\n")
    assert chat.exit_code == 1 and "Traceback" not in chat.stderr
    (line,) = chat.stderr.strip().splitlines()
    assert line.startswith("Error: Every member failed in round 1: bad#1")
    (run,) = db_rows("select status, error from consortium_runs")
    assert run["status"] == "failed" and "Every member failed" in run["error"]
