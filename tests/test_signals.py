"""A run ended from outside, on real ``llm`` processes: SIGHUP (a closed
terminal), SIGTERM (a killed job) and kill -9 in the middle of a run."""

import json
import signal
import sqlite3
import subprocess
import time

import pytest

from llm_consortium import ConsortiumOrchestrator
from llm_consortium.core.runner import signals_interrupt
from helpers import db_rows, invoke, llm_process
from llm_consortium.evaluation.simulator import arbiter_xml

RUN = ["consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge"]


def start(*args, stdin=subprocess.DEVNULL):
    return llm_process(*args, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_mid_run(proc):
    """Until m1's answer is recorded, while m2 is still answering."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if db_rows("SELECT 1 FROM consortium_calls WHERE model = 'm1'"):
                return
        except sqlite3.OperationalError:  # no database or table yet
            pass
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def stalled_panel(sim):
    """m1 answers at once; m2 would take 30 s, so a run is stopped mid-way."""
    sim.add("m1", reply="Member one says 42.")
    sim.add("m2", reply="never", latency=30)
    sim.add("judge", reply=arbiter_xml("The answer is 42.", 0.9))
    return sim


def assert_cancelled_with_what_arrived():
    (run,) = db_rows("SELECT * FROM consortium_runs")
    assert run["status"] == "cancelled" and run["finished"]
    calls = {c["model"]: c for c in db_rows("SELECT * FROM consortium_calls WHERE run_id = ?", (run["id"],))}
    assert calls["m1"]["text"] == "Member one says 42."
    assert calls["m2"]["cancelled"] == 1
    return run


@pytest.mark.slow  # signals
def test_sighup_cancels_llm_consortium_and_records_it(stalled_panel):
    proc = start(*RUN)
    wait_mid_run(proc)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    assert "Traceback" not in err
    run = assert_cancelled_with_what_arrived()
    assert f"Cancelled. The run is recorded as cancelled (llm consortium inspect {run['id'][:8]})" in err


@pytest.mark.slow  # signals
def test_sigterm_cancels_a_saved_consortium_run_by_llm_and_records_it(stalled_panel):
    assert invoke("consortium", "save", "my-c", "-m", "m1", "-m", "m2", "--arbiter", "judge").exit_code == 0
    proc = start("-m", "my-c", "What is 6*7?")
    wait_mid_run(proc)
    proc.terminate()
    assert proc.wait(timeout=30) != 0
    assert "Traceback" not in proc.stderr.read()
    assert assert_cancelled_with_what_arrived()["name"] == "my-c"


@pytest.mark.slow  # signals
def test_sighup_cancels_llm_chat_and_records_it(stalled_panel):
    assert invoke("consortium", "save", "my-c", "-m", "m1", "-m", "m2", "--arbiter", "judge").exit_code == 0
    proc = start("chat", "-m", "my-c", stdin=subprocess.PIPE)
    proc.stdin.write("What is 6*7?\n")
    proc.stdin.flush()
    wait_mid_run(proc)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) != 0
    assert_cancelled_with_what_arrived()


@pytest.mark.slow  # signals
def test_a_run_shows_as_running_while_its_process_lives_and_interrupted_once_killed(stalled_panel):
    proc = start(*RUN)
    try:
        wait_mid_run(proc)
        assert json.loads(invoke("consortium", "runs", "--json").stdout)[0]["status"] == "running"
    finally:
        proc.kill()
        proc.wait(timeout=30)  # reaped: no process has its pid now
    (row,) = db_rows("SELECT id, status FROM consortium_runs")
    assert row["status"] == "running"  # as the killed process left it
    assert "interrupted" in invoke("consortium", "runs").stdout
    assert json.loads(invoke("consortium", "runs", "--json").stdout)[0]["status"] == "interrupted"
    assert f"Run {row['id']}  interrupted" in invoke("consortium", "inspect").stdout
    assert json.loads(invoke("consortium", "inspect", row["id"][:8], "--json").stdout)["status"] == "interrupted"


def test_a_program_that_handles_sigterm_keeps_its_handler(panel):
    """Handlers are set only where a signal would end the process on the
    spot, and the default is put back after the run."""
    seen = []

    def own_handler(signum, frame):
        pass

    def reply(request):  # while the run goes on
        seen.append(signal.getsignal(signal.SIGTERM))
        return "42"

    panel.add("m1", reply=reply)
    previous = signal.signal(signal.SIGTERM, own_handler)
    try:
        ConsortiumOrchestrator(models=["m1"], arbiter="judge").orchestrate_sync("q")
        assert seen == [own_handler] and signal.getsignal(signal.SIGTERM) is own_handler
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with signals_interrupt():
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, own_handler)
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
