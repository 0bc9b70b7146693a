"""Saved configurations and run records in llm's logs.db (store.py, recorder.py)."""

import asyncio
import json
import sqlite3
import subprocess
import textwrap
import threading

import llm
import pytest

from helpers import db_path, db_rows, python_process
from llm_consortium import ConsortiumConfig, ConsortiumError, ConsortiumOrchestrator
from llm_consortium.storage import store
from llm_consortium.core.engine import Run
from llm_consortium.storage.recorder import RunRecorder
from llm_consortium.storage.store import AmbiguousRunId, get_run, latest_run_id, list_runs
from llm_consortium.core.results import MemberResult, Usage
from llm_consortium.evaluation.simulator import arbiter_xml

V03_CONFIG = {"models": ["a", "b"], "system_prompt": None, "confidence_threshold": 0.8, "max_iterations": 3, "arbiter": "a"}


def recorded_run(models, recorder=None, **settings):
    """Run a consortium with a RunRecorder; returns (result or error, get_run of it)."""
    orchestrator = ConsortiumOrchestrator(
        models=models, arbiter="judge", retry_backoff=0.01, observers=[recorder or RunRecorder()], **settings
    )
    result = orchestrator.orchestrate_sync("q")
    return result, get_run(result["metadata"]["run_id"])


def fake_run(run_id=None):
    """A Run for driving a recorder by hand, without calling any model."""
    run = Run(config=ConsortiumConfig(models=["a"], arbiter="a"), prompt="p", system=None,
              conversation="", history=[], handles={})
    if run_id:
        run.run_id = run_id
    return run


# Saved configurations


def test_save_load_list_remove(sim):
    store.save_config("beta", {"models": ["m1"], "arbiter": "judge", "quorum": 2})
    store.save_config("alpha", {"models": ["m2"], "arbiter": "judge"})
    assert store.load_config("beta") == {"models": ["m1"], "arbiter": "judge", "quorum": 2}
    assert store.load_config("missing") is None
    listed = store.list_configs()
    assert [name for name, _, _ in listed] == ["alpha", "beta"]
    assert listed[0][1] == {"models": ["m2"], "arbiter": "judge"}
    assert listed[0][2].endswith("+00:00")  # ISO, UTC

    store.save_config("beta", {"models": ["m3"], "arbiter": "judge"})  # replaces
    assert store.load_config("beta")["models"] == ["m3"]
    assert store.remove_config("beta") is True
    assert store.remove_config("beta") is False
    assert [name for name, _ in store.saved_configs_fast()] == ["alpha"]


def test_configs_saved_even_with_logs_off(sim):
    (llm.user_dir() / "logs-off").touch()
    assert store.logging_enabled() is False
    store.save_config("kept", {"models": ["m1"], "arbiter": "judge"})
    assert store.load_config("kept") is not None


@pytest.mark.empty_user_dir  # it writes an older version's table itself
def test_v03_row_keeps_working(sim):
    conn = sqlite3.connect(db_path())
    with conn:
        conn.execute("CREATE TABLE consortium_configs (name TEXT PRIMARY KEY, config TEXT, created_at TEXT)")
        conn.execute("INSERT INTO consortium_configs VALUES (?, ?, ?)", ("old", json.dumps(V03_CONFIG), "2024-06-01T10:00:00"))
    conn.close()

    assert store.saved_configs_fast() == [("old", V03_CONFIG)]
    assert store.load_config("old") == V03_CONFIG
    assert store.list_configs() == [("old", V03_CONFIG, "2024-06-01T10:00:00")]
    assert ConsortiumConfig.from_dict(store.load_config("old")).models == ["a", "b"]
    # the table kept exactly its three columns
    assert [row["name"] for row in db_rows("PRAGMA table_info(consortium_configs)")] == ["name", "config", "created_at"]


@pytest.mark.empty_user_dir
def test_saved_configs_fast_without_db_creates_nothing(sim):
    assert store.saved_configs_fast() == []
    assert not db_path().exists()


def test_saved_configs_fast_without_table(sim):
    sqlite3.connect(db_path()).close()
    assert store.saved_configs_fast() == []


def test_saved_configs_fast_skips_broken_row(sim):
    store.save_config("good", {"models": ["m1"], "arbiter": "judge"})
    conn = sqlite3.connect(db_path())
    with conn:
        conn.execute("INSERT INTO consortium_configs VALUES ('broken', '{not json', '')")
        conn.execute("INSERT INTO consortium_configs VALUES ('null', NULL, '')")
    conn.close()
    assert store.saved_configs_fast() == [("good", {"models": ["m1"], "arbiter": "judge"})]


def test_saved_configs_fast_with_corrupt_db(sim):
    db_path().write_bytes(b"this is not a sqlite database at all" * 100)
    assert store.saved_configs_fast() == []


def test_migrations_applied_once(sim):
    store.save_config("x", {"models": ["m1"], "arbiter": "judge"})
    store.ensure_schema(store.connect(), db_path())
    names = [row["name"] for row in db_rows("SELECT name FROM consortium_migrations ORDER BY name")]
    assert names == [name for name, _ in store.MIGRATIONS]
    tables = {row["name"] for row in db_rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"consortium_runs", "consortium_calls", "consortium_rounds", "consortium_configs"} <= tables


# Recording runs


def test_successful_run_is_recorded_with_rounds_and_calls(sim):
    sim.add_many(["m1", "m2"], reply="member answer")
    sim.add("judge", reply=[arbiter_xml("first", 0.5, refinement_areas=["units"]), arbiter_xml("final", 0.9)])
    result, run = recorded_run(["m1", "m2"], recorder=RunRecorder(name="saved-name"))

    assert run["status"] == "success"
    assert run["name"] == "saved-name"
    assert run["prompt"] == "q"
    assert run["config"]["models"] == ["m1", "m2"]
    assert run["method"] == "arbiter"
    assert run["synthesis"] == "final" and run["confidence"] == 0.9
    assert run["iterations"] == 2
    assert run["input_tokens"] == result["metadata"]["usage"]["input"] > 0
    assert run["output_tokens"] == result["metadata"]["usage"]["output"] > 0
    assert run["finished"] and run["error"] is None
    assert run["result"]["synthesis"]["synthesis"] == "final"

    first, second = run["rounds"]
    assert first["synthesis"] == "first" and first["refinement_areas"] == ["units"]
    assert first["parse_ok"] is True
    members = [c for c in first["calls"] if c["role"] == "member"]
    assert sorted(c["model"] for c in members) == ["m1", "m2"]
    assert all(c["prompt"] == "q" and c["text"] == "member answer" for c in members)
    assert all(c["output_tokens"] > 0 and c["input_tokens"] > 0 for c in members)
    arbiter = [c for c in first["calls"] if c["role"] == "arbiter"]
    assert len(arbiter) == 1 and arbiter[0]["model"] == "judge" and "<original_prompt>" in arbiter[0]["prompt"]
    assert "<synthesis>first</synthesis>" in arbiter[0]["text"]
    assert second["synthesis"] == "final"
    assert "first" in [c for c in second["calls"] if c["role"] == "member"][0]["prompt"]  # refine prompt


def test_failed_run_keeps_errors(sim):
    sim.add("b1", status=401, error_message="invalid key")
    sim.add("b2", status=400, error_message="nope")
    sim.add("judge", reply=arbiter_xml("s", 0.9))
    orchestrator = ConsortiumOrchestrator(models=["b1", "b2"], arbiter="judge", retry_backoff=0.01, observers=[RunRecorder()])
    with pytest.raises(ConsortiumError):
        orchestrator.orchestrate_sync("q")
    run = get_run(latest_run_id())
    assert run["status"] == "failed"
    assert "Every member failed" in run["error"]
    assert run["finished"] is not None
    (round_one,) = run["rounds"]
    assert round_one["synthesis"] is None
    errors = {c["model"]: c["error"] for c in round_one["calls"]}
    assert "401" in errors["b1"] and "400" in errors["b2"]
    assert run["result"]["iterations"][0]["model_responses"][0]["error"]


@pytest.mark.empty_user_dir
def test_logs_off_records_nothing(sim):
    (llm.user_dir() / "logs-off").touch()
    sim.add("m1", reply="answer")
    sim.add("judge", reply=arbiter_xml("s", 0.9))
    result, run = recorded_run(["m1"])
    assert result["synthesis"]["synthesis"] == "s"
    assert run is None
    assert list_runs() == []


def test_cancelled_run_keeps_what_arrived(sim):
    sim.add("fast", reply="early answer")
    sim.add("slow", reply="late", latency=5)
    sim.add("judge", reply=arbiter_xml("s", 0.9))
    orchestrator = ConsortiumOrchestrator(models=["fast", "slow"], arbiter="judge", retry_backoff=0.01, observers=[RunRecorder()])

    async def main():
        task = asyncio.create_task(orchestrator.orchestrate("q"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    run = get_run(latest_run_id())
    assert run["status"] == "cancelled"
    assert run["error"] and run["finished"]
    calls = [c for r in run["rounds"] for c in r["calls"]]
    assert [(c["model"], c["text"], c["cancelled"]) for c in calls] == [
        ("fast", "early answer", False),
        ("slow", None, True),  # still answering when the run was cancelled
    ]
    assert run["result"]["metadata"]["run_id"] == run["id"]


def test_records_that_cannot_be_written_are_reported_once_and_the_rest_written(sim, capsys):
    recorder = RunRecorder()
    run = fake_run()
    store.save_config("x", {"models": ["m1"], "arbiter": "judge"})  # the schema, before the table goes
    conn = sqlite3.connect(db_path())
    conn.execute("DROP TABLE consortium_calls")
    conn.close()
    recorder.run_started(run)
    member = MemberResult(model="a", instance=1, text="t", usage=Usage(input=1, output=2))
    recorder.member_finished(run, 1, member, "p")
    recorder.member_finished(run, 1, member, "p")
    recorder.run_finished(run, run.to_dict())
    (line,) = capsys.readouterr().err.splitlines()
    assert "not fully recorded" in line and "no such table: consortium_calls" in line and "2 of its records" in line
    assert recorder.recorded(run.run_id) is False
    # the calls are lost, but the run's final status is not
    status = run.to_dict()["metadata"]["status"]
    assert db_rows("SELECT status FROM consortium_runs WHERE id = ?", (run.run_id,)) == [{"status": status}]


@pytest.mark.slow  # several processes at once
def test_two_processes_record_at_once(sim, tmp_path):
    """Two processes each record a run of many calls at the same moment; both arrive whole."""
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import sys, time, pathlib
        from llm_consortium.core.config import ConsortiumConfig
        from llm_consortium.core.engine import Round, Run
        from llm_consortium.storage.recorder import RunRecorder
        from llm_consortium.core.results import Judgement, MemberResult, Usage

        run = Run(config=ConsortiumConfig(models=["a"], arbiter="a"), prompt="p", system=None,
                  conversation="", history=[], handles={{}}, run_id=sys.argv[1])
        recorder = RunRecorder()
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.005)
        recorder.run_started(run)
        members = []
        for i in range(1, 201):
            member = MemberResult(model="a", instance=i, text=f"answer {{i}}", usage=Usage(input=1, output=1))
            members.append(member)
            run.usage.add(member.usage)
            recorder.member_finished(run, 1, member, "p")
        round_ = Round(1, members, Judgement(synthesis="s", confidence=0.9), "raw")
        run.rounds.append(round_)
        recorder.round_finished(run, round_)
        recorder.run_finished(run, run.to_dict())
        """
    )
    processes = [
        python_process(script, run_id, stderr=subprocess.PIPE, text=True)
        for run_id in ("process-one", "process-two")
    ]
    go.touch()
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert err == ""  # no "could not record" warning
    for run_id in ("process-one", "process-two"):
        run = get_run(run_id)
        assert run["status"] == "success"
        assert run["input_tokens"] == 200 and run["iterations"] == 1
        assert len(run["rounds"][0]["calls"]) == 200


def test_two_threads_record_real_runs_at_once(sim):
    sim.add_many(["m1", "m2", "m3"], reply="answer", latency=0.2)
    sim.add("judge", reply=arbiter_xml("s", 0.9))
    results = []

    def work():
        orchestrator = ConsortiumOrchestrator(models=["m1", "m2", "m3"], arbiter="judge", observers=[RunRecorder()])
        results.append(orchestrator.orchestrate_sync("q"))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    for result in results:
        run = get_run(result["metadata"]["run_id"])
        assert run["status"] == "success"
        assert len(run["rounds"][0]["calls"]) == 4  # three members and the arbiter


# Queries


def test_get_run_by_prefix(sim):
    recorder = RunRecorder()
    for run_id in ("abc111", "abc222", "def333"):
        run = fake_run(run_id)
        recorder.run_started(run)
        recorder.run_finished(run, run.to_dict())
    assert get_run("def")["id"] == "def333"
    assert get_run("abc2")["id"] == "abc222"
    assert get_run("abc111")["id"] == "abc111"
    assert get_run("zzz") is None
    assert get_run("") is None
    with pytest.raises(AmbiguousRunId):
        get_run("abc")


def test_list_runs_newest_first(sim):
    sim.add("m1", reply="answer")
    sim.add("judge", reply=arbiter_xml("s", 0.75))
    ids = [recorded_run(["m1"], max_iterations=1)[0]["metadata"]["run_id"] for _ in range(3)]
    runs = list_runs()
    assert [r.id for r in runs] == ids[::-1]
    assert latest_run_id() == ids[-1]
    assert runs[0].models == ["m1"]
    assert runs[0].status == "below_threshold" and runs[0].confidence == 0.75 and runs[0].iterations == 1
    assert runs[0].input_tokens > 0 and runs[0].output_tokens > 0
    assert set(runs[0].model_dump()) == {
        "id", "name", "prompt", "method", "models", "status", "confidence", "agreement", "stop_on", "threshold",
        "threshold_note", "iterations", "input_tokens", "output_tokens", "cost_usd", "priced_usd",
        "unpriced_calls", "unreported_calls", "stopped_because", "started", "finished", "notes", "members",
        "answered", "agreeing", "not_asked", "decisive"
    }
    assert runs[0].threshold_note == "confidence 0.75 below the 0.80 threshold after 1 round (max iterations)"
    # sim models without a model_name have no known price: unknown, not 0
    assert runs[0].cost_usd is None and runs[0].unpriced_calls == 2 and runs[0].priced_usd == 0
    assert [r.id for r in list_runs(limit=2)] == ids[:0:-1]


def test_list_runs_filters(sim):
    sim.add_many(["m1", "m2"], reply="<answer>4</answer>")
    sim.add("judge", reply=arbiter_xml("4", 0.9))
    first = recorded_run(["m1"], RunRecorder("solo"), max_iterations=1)[0]["metadata"]["run_id"]
    asked = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge", method="vote", observers=[RunRecorder("pair")])
    second = asked.orchestrate_sync("What is 2+2? Say it PLAINLY.")["metadata"]["run_id"]
    conn = store.connect()
    with conn:  # a run whose process has gone: read as interrupted
        conn.execute("UPDATE consortium_runs SET status = 'running', pid = 2147483646 WHERE id = ?", (first,))
    conn.close()
    ids = lambda **filters: [r.id for r in list_runs(None, **filters)]  # noqa: E731
    assert ids(prompt="plainly") == [second] and ids(prompt="nothing like it") == []
    assert ids(name="solo") == [first] and ids(method="vote") == [second]
    assert ids(status="interrupted") == [first] and ids(status="running") == [] and ids(status="success") == [second]
    assert ids(name="pair", method="arbiter") == []
    assert list_runs(None, method="vote")[0].prompt == "What is 2+2? Say it PLAINLY."
    assert store.run_facets() == {"name": ["pair", "solo"], "method": ["arbiter", "vote"],
                                  "status": ["running", "success"]}


def test_queries_on_empty_store(sim):
    assert list_runs() == []
    assert latest_run_id() is None
    assert get_run("abc") is None
