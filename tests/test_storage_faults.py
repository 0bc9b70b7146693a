"""logs.db under stress: concurrent first runs, a database locked or full
mid-run, --no-log and ``llm logs off``, limits that overflow SQLite."""

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import llm
import pytest

from llm_consortium import ConsortiumOrchestrator, Observer, RunRecorder
from llm_consortium.storage import store
from llm_consortium.storage.store import get_run
from helpers import db_path, db_rows, invoke, llm_process, llm_run

RUN = ["consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge"]


@pytest.mark.slow  # several processes at once
@pytest.mark.empty_user_dir
def test_concurrent_first_runs_leave_llm_working(panel):
    """Four runs at once on a fresh user dir (more processes than cores):
    llm's own migrations must not race (they left logs.db half-migrated,
    and every llm command broken)."""
    procs = [
        llm_process(*RUN, "--no-raw", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        for _ in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out == "The answer is 42.\n"
        assert "Warning" not in err and "Traceback" not in err, err
    logs = invoke("logs", "-n", "1")
    assert logs.exit_code == 0, logs.stderr
    assert "The answer is 42." in logs.stdout
    runs = db_rows("SELECT id, status FROM consortium_runs")
    assert [r["status"] for r in runs] == ["success"] * 4
    for run in runs:  # each with its own calls: two members and the arbiter
        assert len(db_rows("SELECT * FROM consortium_calls WHERE run_id = ?", (run["id"],))) == 3
    logged = json.loads(invoke("logs", "-n", "0", "--json").stdout)
    assert sorted(entry["response_json"]["metadata"]["run_id"] for entry in logged) == sorted(r["id"] for r in runs)
    assert invoke("-m", "m1", "plain llm still works").exit_code == 0


def hold_exclusive_lock():
    """Another connection holding logs.db's EXCLUSIVE lock (no one else can
    read or write) until its ``rollback()``."""
    holder = sqlite3.connect(db_path(), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


class ReleaseAfterFirstAnswer(Observer):
    """Releases the lock a while after the first member's answer arrived:
    until then every write of the run has been failing."""

    def __init__(self, holder, delay):
        self.holder, self.delay = holder, delay

    def member_finished(self, run, round_number, member, prompt):
        if member.model == "m1":
            threading.Timer(self.delay, self.holder.rollback).start()


def test_lock_held_beyond_busy_timeout_mid_run_the_whole_record_arrives(panel, monkeypatch):
    monkeypatch.setenv("LLM_CONSORTIUM_BUSY_TIMEOUT", "0.2")
    panel.add("m2", reply="Member two says 42.", latency=1.5)  # the run goes on after the lock is released
    store.connect().close()
    holder = hold_exclusive_lock()
    recorder = RunRecorder()
    orchestrator = ConsortiumOrchestrator(
        models=["m1", "m2"], arbiter="judge", observers=[recorder, ReleaseAfterFirstAnswer(holder, 0.6)]
    )
    result = orchestrator.orchestrate_sync("q")
    run_id = result["metadata"]["run_id"]
    run = get_run(run_id)
    assert run["status"] == "success" and run["synthesis"] == "The answer is 42."
    (round_one,) = run["rounds"]
    assert sorted(c["model"] for c in round_one["calls"]) == ["judge", "m1", "m2"]
    assert run["result"]["metadata"]["run_id"] == run_id
    assert recorder.recorded(run_id)


def test_lock_held_past_the_end_of_a_run_is_reported_and_the_record_follows(panel, monkeypatch):
    """The CLI answers, says in one line that the run is not recorded, points
    at no record; the records are written once the lock goes."""
    monkeypatch.setenv("LLM_CONSORTIUM_BUSY_TIMEOUT", "0.2")
    invoke(*RUN)  # logs.db, llm's tables and ours in place
    holder = hold_exclusive_lock()
    try:
        result = invoke(*RUN, "--no-raw")
    finally:
        holder.rollback()
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    (line,) = [line for line in result.stderr.splitlines() if "not fully recorded" in line]
    assert "(database is locked)" in line or "(still waiting for the database)" in line
    assert "llm consortium inspect" not in result.stderr
    assert "could not add the answer to llm logs" in result.stderr
    deadline = time.monotonic() + 20
    while len(db_rows("SELECT * FROM consortium_runs WHERE status = 'success'")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def wait_for_first_answer(proc):
    """Until m1's answer in the running run is recorded, while m2 is still answering."""
    deadline = time.monotonic() + 30
    while not db_rows("SELECT 1 FROM consortium_calls JOIN consortium_runs ON consortium_runs.id = run_id "
                      "WHERE model = 'm1' AND status = 'running'"):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow  # logs.db changed from outside while a process runs
@pytest.mark.parametrize("change", ["removed", "replaced"])
def test_logs_db_removed_or_replaced_mid_run_keeps_the_whole_run(panel, tmp_path, change):
    """logs.db deleted (or swapped for a copy taken before the run) while a
    slow member answers: the run was missing from ``runs`` afterwards. The
    recorder notices that the file it holds is no longer the one at the
    path, opens the one there (creating it) and writes the whole run again."""
    assert invoke(*RUN).exit_code == 0  # an earlier run, in the file that goes
    backup = tmp_path / "backup.db"
    shutil.copy(db_path(), backup)
    panel.add("m2", reply="Member two says 42.", latency=1.5)
    proc = llm_process(*RUN, "--no-raw", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    with proc:
        wait_for_first_answer(proc)
        if change == "removed":
            db_path().unlink()
        else:
            os.replace(backup, db_path())
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "The answer is 42.\n" and "not fully recorded" not in err and "Traceback" not in err
    runs = json.loads(invoke("consortium", "runs", "--json").stdout)
    assert len(runs) == (1 if change == "removed" else 2)  # the earlier run went with the removed file
    run = get_run(runs[0]["id"])
    assert runs[0]["status"] == run["status"] == "success" and run["synthesis"] == "The answer is 42."
    (round_one,) = run["rounds"]
    assert sorted(c["model"] for c in round_one["calls"]) == ["judge", "m1", "m2"]  # m1's too: written again
    assert f"inspect {runs[0]['id'][:8]}" in err


def with_free_pages(size: int) -> int:
    """Free ``size`` bytes of pages inside logs.db; returns the file's size."""
    conn = sqlite3.connect(db_path())
    with conn:
        conn.execute("CREATE TABLE scratch (b)")
        conn.execute("INSERT INTO scratch VALUES (?)", (b"x" * size,))
    with conn:
        conn.execute("DROP TABLE scratch")
    conn.close()
    return db_path().stat().st_size


@pytest.mark.slow  # a file size limit of the process's own
def test_disk_full_mid_run_answers_and_says_the_run_is_not_recorded(panel):
    """logs.db may not grow (a file size limit: writes fail as on a full
    disk) once the first small records are in: the run answers, says so in
    one line, points at no record, and leaves logs.db working."""
    assert invoke(*RUN).exit_code == 0  # every table in place, the ad hoc config saved
    size = with_free_pages(60_000)  # room for the run's first, small records
    panel.add("m1", reply="y" * 300_000)  # this answer cannot be stored
    result = llm_run(*RUN, "--no-raw", file_size_limit=size, env={**os.environ, "LLM_CONSORTIUM_BUSY_TIMEOUT": "0.5"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    (line,) = [line for line in result.stderr.splitlines() if "not fully recorded" in line]
    assert "disk I/O error" in line or "full" in line
    assert "llm consortium inspect" not in result.stderr
    assert "Traceback" not in result.stderr
    assert db_path().stat().st_size == size
    assert invoke("logs", "-n", "1").exit_code == 0
    listing = invoke("consortium", "runs").stdout.splitlines()
    assert "interrupted" in listing[1] and "success" in listing[2]


@pytest.mark.slow  # a file size limit of the process's own
@pytest.mark.empty_user_dir
def test_disk_full_during_llm_migrations_leaves_logs_db_as_it_was(panel):
    """The first answer to log on a logs.db holding only the plugin's tables:
    llm's migrations run out of room part-way. They are rolled back, so llm
    works once there is room (it was left half-migrated, and broken)."""
    assert invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    size = with_free_pages(60_000)
    result = llm_run(*RUN, "--no-raw", file_size_limit=size)
    assert result.returncode == 0 and result.stdout == "The answer is 42.\n"
    assert "Warning: could not add the answer to llm logs: disk I/O error" in result.stderr
    tables = {row["name"] for row in db_rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not [name for name in tables if not name.startswith("consortium_")]
    logs = invoke("logs", "-n", "1")
    assert logs.exit_code == 0, logs.stderr
    assert invoke("-m", "m1", "hello").stdout == "Member one says 42.\n"


def test_saved_consortiums_listed_while_the_database_is_exclusively_locked(panel):
    invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge")
    holder = hold_exclusive_lock()
    try:
        models = invoke("models").stdout
    finally:
        holder.rollback()
    assert "my-c" in models


def test_runs_limit_beyond_sqlite_integers_lists_all(panel):
    invoke(*RUN)
    invoke(*RUN)
    for limit in ("100000000000000000000", "0"):
        result = invoke("consortium", "runs", "-n", limit)
        assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3  # a header and two runs
    assert len(json.loads(invoke("consortium", "runs", "-n", "1", "--json").stdout)) == 1
    refused = invoke("consortium", "runs", "-n", "-1")
    assert refused.exit_code == 2 and "-1 is not in the range x>=0" in refused.stderr


# --no-log and llm logs off: nothing stored, nothing pointed at


def test_saved_model_with_no_log_stores_nothing(panel):
    invoke("consortium", "save", "my-c", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    result = invoke("-m", "my-c", "secret question", "--no-log")
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    assert db_rows("SELECT * FROM consortium_runs") == []
    assert db_rows("SELECT * FROM consortium_calls") == []
    assert "secret question" not in db_path().read_bytes().decode("latin-1")
    assert invoke("-m", "my-c", "logged question").exit_code == 0  # without it, recorded
    assert len(db_rows("SELECT * FROM consortium_runs")) == 1


@pytest.mark.empty_user_dir
def test_run_with_no_log_stores_nothing_and_points_nowhere(panel):
    result = invoke(*RUN, "--no-log")
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    assert "Confidence 0.90" in result.stderr
    assert "llm consortium inspect" not in result.stderr
    assert not db_path().exists()  # not even the ad hoc configuration


@pytest.mark.empty_user_dir
def test_run_with_logs_off_points_nowhere(panel):
    (llm.user_dir() / "logs-off").touch()
    result = invoke(*RUN)
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    assert "llm consortium inspect" not in result.stderr
    assert not db_path().exists()


def test_recorded_run_points_at_its_record(panel):
    result = invoke(*RUN)
    (run,) = db_rows("SELECT id, status FROM consortium_runs")
    assert f"(llm consortium inspect {run['id'][:8]})" in result.stderr and run["status"] == "success"
