"""What a person sees in a terminal: live progress on stderr (shown as on
a terminal), the answer on stdout once it is final, nothing of a replaced draft."""

import os
import pty
import select
import subprocess
import time

import click
import pytest

from helpers import invoke, llm_process, read_until_closed
from llm_consortium.evaluation.simulator import arbiter_xml


def run_llm(args):
    """Run `llm` in this process with stderr shown as on a terminal
    (LLM_CONSORTIUM_TERMINAL) and stdout on a pipe: returns both texts."""
    result = invoke(*args, color=True, terminal="stderr")
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


def llm_on_a_pipe(args):
    """Run `llm` in a process of its own with stdout on a pipe: returns
    stdout chunks with the time each arrived (when the answer is written is
    what the tests below check, so the pipe is a real one)."""
    proc = llm_process(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    chunks, err = [], b""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    open_fds = {out_fd, err_fd}
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 30)
        assert ready, "llm produced no output for 30 s"
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
            elif fd == out_fd:
                chunks.append((time.perf_counter(), data.decode()))
            else:
                err += data
    assert proc.wait(timeout=30) == 0, err.decode()
    return chunks


def test_progress_on_a_terminal(sim):
    sim.add_many(["m1", "m2"], reply="an answer of several words", latency=0.3, chunk_delay=0.05)
    sim.add("broken", status=401, error_message="bad key")
    sim.add("judge", reply=arbiter_xml("Done.", 0.9), latency=0.3)
    out, err = run_llm(["consortium", "q", "-m", "m1", "-m", "m2", "-m", "broken", "--arbiter", "judge",
                        "--no-raw"])
    assert out == "Done.\n"
    assert "\x1b[" in err  # redrawn in place
    err = click.unstyle(err)
    assert "Round 1" in err
    assert "m1 #1: waiting" in err and "m1 #1: done in" in err
    assert "broken #1: failed: " in err and "401" in err
    assert "arbiter judge: waiting for the members" in err
    assert "Round 1: 2/3 members answered" in err  # collapsed at the end
    assert "Confidence 0.90" in err


def test_council_progress_shows_the_peer_review(sim):
    """While the members review each other's answers, the live block says so
    (it used to say the arbiter was waiting for members that were all done)."""
    def member(request):
        if "FINAL RANKING:" in request.user:
            return "FINAL RANKING:\n1. Response A\n2. Response B"
        return "an answer"

    sim.add_many(["m1", "m2", "m3"], reply=member, latency=0.4)
    sim.add("judge", reply=arbiter_xml("Done.", 0.9), latency=0.3)
    out, err = run_llm(["consortium", "q", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge",
                        "--method", "council", "--no-raw"])
    assert out == "Done.\n"
    assert len([r for r in sim.requests if "FINAL RANKING:" in r.user]) == 3
    frames = [click.unstyle(frame) for frame in err.split("\x1b[J")]
    reviewing = [f for f in frames if "arbiter judge: waiting for the peer review" in f]
    assert reviewing and all(f.count("done in") == 3 for f in reviewing)
    assert any("m1 #1: done in" in f and "· reviewing the other answers" in f for f in reviewing)
    assert any(f.count("· review in") == 3 and "arbiter judge: reading the answers" in f for f in frames)
    assert not [f for f in frames if f.count("done in") == 3 and "waiting for the members" in f]
    assert "Round 1: 3/3 members answered" in frames[-1]


@pytest.mark.slow  # a real pseudo-terminal: the one test of what isatty() says without LLM_CONSORTIUM_TERMINAL
def test_progress_on_a_real_terminal(sim):
    sim.add("m1", reply="answer", latency=0.2)
    sim.add("judge", reply=arbiter_xml("Done.", 0.9))
    master, slave = pty.openpty()
    proc = llm_process("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw",
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    received = read_until_closed([master, proc.stdout.fileno()])
    assert proc.wait(timeout=30) == 0
    os.close(master)
    err = received[master].decode()
    assert received[proc.stdout.fileno()] == b"Done.\n"
    assert "\x1b[" in err and "m1 #1: waiting" in click.unstyle(err) and "Confidence 0.90" in click.unstyle(err)


def test_no_progress_without_a_terminal_or_with_quiet(sim):
    sim.add("m1", reply="answer", latency=0.2)
    sim.add("judge", reply=arbiter_xml("Done.", 0.9))
    err = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw").stderr
    assert "waiting" not in err and "\x1b[" not in err and "Confidence 0.90" in err
    out, err = run_llm(["consortium", "q", "-m", "m1", "--arbiter", "judge", "--quiet"])
    assert err == "" and out == "Done.\n"


@pytest.mark.slow
def test_answer_arrives_once_the_arbiter_reply_is_complete(sim):
    sim.add("m1", reply="answer")
    words = " ".join(f"word{i}" for i in range(30))
    sim.add("judge", reply=arbiter_xml(words, 0.9), chunk_delay=0.02)
    chunks = llm_on_a_pipe(["consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw"])
    text = "".join(t for _, t in chunks)
    assert text == words + "\n"
    assert "<synthesis>" not in text and "<confidence>" not in text
    (arbiter_call,) = sim.calls("judge")
    # Only a complete, parsed reply is printed: nothing before the arbiter finished.
    assert chunks[0][0] >= arbiter_call.finished


@pytest.mark.slow
def test_saved_consortium_answer_matches_the_record(sim):
    sim.add("m1", reply="answer")
    words = " ".join(f"w{i}" for i in range(30))
    sim.add("judge", reply=arbiter_xml(words, 0.9), chunk_delay=0.02)
    assert invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    chunks = llm_on_a_pipe(["-m", "c", "q"])
    assert "".join(t for _, t in chunks) == words + "\n"
    assert chunks[0][0] >= sim.calls("judge")[0].finished


def test_a_replaced_draft_never_reaches_stdout(sim):
    sim.add("m1", reply="answer")
    sim.add("judge", reply=[arbiter_xml("DRAFT answer", 0.3), arbiter_xml("Final answer", 0.95)], chunk_delay=0.01)
    assert invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw").stdout == "Final answer\n"


def test_last_round_streams_even_when_not_confident(sim):
    sim.add("m1", reply="answer")
    sim.add("judge", reply=[arbiter_xml("first", 0.1), arbiter_xml("second and last", 0.2)], chunk_delay=0.01)
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--max-iterations", "2", "--no-raw")
    assert result.stdout == "second and last\n"
    assert "2 rounds" in result.stderr


def test_a_draft_quoted_in_a_thinking_block_never_reaches_stdout(sim):
    sim.add("m1", reply="answer")
    thinking = "<thinking>Maybe <confidence>0.95</confidence> <synthesis>DRAFT</synthesis></thinking>\n"
    sim.add("judge", reply=[thinking + arbiter_xml("round one", 0.3), arbiter_xml("Final", 0.95)], chunk_delay=0.01)
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw")
    assert result.stdout == "Final\n"
    assert "2 rounds" in result.stderr


def test_a_quoted_format_before_the_answer_gives_the_real_answer(sim):
    sim.add("m1", reply="answer")
    quoted = "I will use <confidence>[0-1]</confidence> and <synthesis>...</synthesis>.\n"
    sim.add("judge", reply=quoted + arbiter_xml("REAL", 0.9), chunk_delay=0.01)
    assert invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw").stdout == "REAL\n"
