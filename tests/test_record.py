"""The typed run record (core/record.py) and the result dict made from it:
the shape `--json`, `--output`, the Python API and `llm -m` give is pinned
key by key, as the package gave it before the record existed."""

import json
import socket
import sqlite3
import subprocess

from helpers import db_path, invoke
from llm_consortium import ConsortiumOrchestrator
from llm_consortium.core.record import SCHEMA_VERSION, RunRecord, record_from_result, result_dict
from llm_consortium.evaluation.simulator import arbiter_xml
from llm_consortium.storage import store
from llm_consortium.storage.recorder import RunRecorder

USAGE = {"input": None, "output": None, "total": None, "unreported": None, "cost_usd": None, "priced_usd": None,
         "unpriced": None}
MEMBER = {"model": None, "instance": None, "text": None, "error": None, "seconds": None, "attempts": None,
          "cancelled": None, "queued": None, "quorum_cancelled": None, "not_asked": None, "tokens": USAGE}
DETAILS = {"agreement": {"share": None, "source": None, "groups": [[{"label": None, "model": None, "instance": None}]],
                         "note": None}}
VERDICT = {"synthesis": None, "confidence": None, "analysis": None, "dissent": None, "refinement_areas": [],
           "parse_ok": None, "agreement": None, "details": DETAILS, "fallback": None, "no_verdict": None,
           "candidates": [], "notes": []}
# The keys of a two-member arbiter run's result, in order, as the package
# printed them with --json before the record (the CLI adds metadata.recorded).
RESULT = {
    "prompt": None,
    "synthesis": VERDICT,
    "model_responses": [MEMBER],
    "iterations": [{"round": None, "usage": USAGE, "model_responses": [MEMBER], "arbiter": {"raw": None, **VERDICT}}],
    "metadata": {
        "run_id": None, "status": None, "notes": [], "members": None, "answered": None, "agreeing": None,
        "not_asked": None, "decisive": None,
        "has_answer": None, "models": [None], "arbiter": None, "method": None, "confidence_threshold": None,
        "stop_on": None, "threshold_note": None, "max_iterations": None, "iteration_count": None,
        "system_prompt": None, "start_time": None, "end_time": None, "seconds": None, "usage": USAGE,
        "max_cost": None, "stopped_because": None, "budget_note": None, "p_right": None, "calibrated_items": None,
        "parent_run_id": None,
    },
}


def keys(value):
    """The key tree of a JSON value: dicts by their keys in order, a list by its first item."""
    if isinstance(value, dict):
        return {key: keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [keys(value[0])] if value else []
    return None


def test_json_and_output_keep_the_documented_shape(panel, tmp_path):
    out = tmp_path / "result.json"
    result = invoke("consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--no-raw",
                    "--json", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    expected = {**RESULT, "metadata": {**RESULT["metadata"], "recorded": None}}
    assert json.dumps(keys(data)) == json.dumps(expected)  # the order of the keys too
    assert json.loads(out.read_text()) == data
    assert data["synthesis"]["synthesis"] == "The answer is 42."
    assert data["metadata"]["status"] == "success" and data["metadata"]["answered"] == 2


def test_python_api_result_is_made_from_the_record(panel):
    result = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge").orchestrate_sync("What is 6*7?")
    assert json.dumps(keys(result)) == json.dumps(RESULT)
    assert result["synthesis"]["synthesis"] == "The answer is 42."
    # The dict reads back into the record it was made from, unchanged.
    record = record_from_result(result)
    assert isinstance(record, RunRecord) and record.schema_version == SCHEMA_VERSION
    assert record.verdict.synthesis == "The answer is 42." and record.settings.models == ["m1", "m2"]
    assert [m.usage.input for m in record.rounds[0].members] == [3, 3]
    assert result_dict(record) == result


def test_a_run_with_no_verdict_reports_an_empty_unparsed_synthesis(sim):
    sim.add("m1", status=400, error_message="bad request")
    sim.add("judge", reply="never asked")
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert list(data["synthesis"]) == list(VERDICT) and data["synthesis"]["parse_ok"] is False
    assert data["synthesis"]["synthesis"] == "" and data["metadata"]["has_answer"] is False
    assert data["model_responses"][0]["error"] and data["model_responses"][0]["text"] is None


# Recorded runs read back into the same record, whichever version recorded them.


def recorded(models=("m1", "m2"), **settings):
    """A run recorded by the RunRecorder, as main records runs: its result and run id."""
    orchestrator = ConsortiumOrchestrator(models=list(models), arbiter="judge", retry_backoff=0.01,
                                          observers=[RunRecorder()], **settings)
    result = orchestrator.orchestrate_sync("What is 6*7?")
    return result, result["metadata"]["run_id"]


def test_a_recorded_run_loads_back_into_the_record_it_was(panel):
    panel.add("m3", status=400, error_message="bad request")
    result, run_id = recorded(("m1", "m2", "m3"))
    assert result["metadata"]["status"] == "partial"
    record = store.load_run(run_id[:8])
    assert isinstance(record, RunRecord)
    assert result_dict(record) == result  # nothing lost
    assert (record.outcome.members, record.outcome.answered) == (3, 2)
    assert record.rounds[0].members[2].error and record.verdict.synthesis == "The answer is 42."


def test_runs_recorded_before_the_outcome_vocabulary_load_with_their_counts(panel):
    """As versions before the outcome vocabulary left them: status 'success',
    no notes or counts in the row, none of the outcome's keys in the result."""
    result, run_id = recorded()
    old = json.loads(json.dumps(result))
    for key in ("status", "notes", "members", "answered", "agreeing", "has_answer"):
        del old["metadata"][key]
    with sqlite3.connect(db_path()) as conn:
        conn.execute("UPDATE consortium_runs SET status = 'success', notes = NULL, members = NULL, answered = NULL, "
                     "agreeing = NULL, result = ? WHERE id = ?", (json.dumps(old), run_id))
    record = store.load_run(run_id)
    # Everything the old version recorded; the counts it never had are unknown (None), not made up.
    unknown = {"members": None, "answered": None, "agreeing": None}
    assert result_dict(record) == {**result, "metadata": {**result["metadata"], **unknown}}
    assert (record.outcome.status, record.outcome.notes, record.outcome.has_answer) == ("success", [], True)
    assert record.verdict.synthesis == "The answer is 42." and len(record.rounds[0].calls) == 3


def test_runs_recorded_before_costs_read_as_unpriced_not_free(panel):
    result, run_id = recorded()
    old = json.loads(json.dumps(result))
    for usage in [old["metadata"]["usage"], *(m["tokens"] for m in old["model_responses"])]:
        for key in ("cost_usd", "priced_usd", "unpriced"):
            del usage[key]
    with sqlite3.connect(db_path()) as conn:
        conn.execute("UPDATE consortium_runs SET cost_usd = NULL, priced_usd = NULL, unpriced_calls = NULL, "
                     "result = ? WHERE id = ?", (json.dumps(old), run_id))
    record = store.load_run(run_id)
    assert record.usage.cost_usd is None and record.usage.unpriced is None
    assert record.rounds[0].members[0].usage.cost_usd is None
    assert record.usage.input == result["metadata"]["usage"]["input"]


def test_an_old_run_below_its_threshold_reads_as_it_would_be_recorded_now(sim):
    sim.add("m1", reply="maybe 42")
    sim.add("judge", reply=arbiter_xml("42", 0.4))
    result, run_id = recorded(("m1",), max_iterations=1)
    assert result["metadata"]["status"] == "below_threshold"
    with sqlite3.connect(db_path()) as conn:
        conn.execute("UPDATE consortium_runs SET status = 'success', notes = NULL, members = NULL, answered = NULL, "
                     "agreeing = NULL WHERE id = ?", (run_id,))
    record = store.load_run(run_id)
    assert record.outcome.status == "below_threshold" and record.outcome.has_answer
    assert (record.outcome.members, record.outcome.answered) == (None, None)


def test_a_run_whose_process_died_loads_from_its_rows(panel):
    result, run_id = recorded()
    dead = subprocess.Popen(["true"])
    dead.wait()
    with sqlite3.connect(db_path()) as conn:  # as a process killed with -9 mid-run leaves it
        conn.execute("UPDATE consortium_runs SET status = 'running', result = NULL, finished = NULL, notes = NULL, "
                     "pid = ?, host = ? WHERE id = ?", (dead.pid, socket.gethostname(), run_id))
    record = store.load_run(run_id)
    assert record.outcome.status == "interrupted" and not record.outcome.has_answer
    assert sorted(m.text for m in record.rounds[0].members) == ["Member one says 42.", "Member two says 42."]
    assert record.verdict.synthesis == "The answer is 42." and record.settings.models == ["m1", "m2"]
    assert record.usage.input == result["metadata"]["usage"]["input"]
    assert result_dict(record)["iterations"][0]["usage"] == result["iterations"][0]["usage"]


def test_inspect_json_holds_the_json_shape(panel):
    ran = json.loads(invoke("consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--no-raw",
                            "--json").stdout)
    inspected = json.loads(invoke("consortium", "inspect", "--json").stdout)
    del ran["metadata"]["recorded"]  # said by run only: whether the record was written
    assert inspected["result"] == ran
    assert inspected["id"] == ran["metadata"]["run_id"]  # the store's own keys beside it, as before


def test_a_round_the_result_lacks_is_read_from_its_calls(panel):
    """Cancelled while its members answered: the round's calls are recorded, its result has no round."""
    result, run_id = recorded()
    cut = {**result, "iterations": [], "model_responses": []}
    with sqlite3.connect(db_path()) as conn:
        conn.execute("DELETE FROM consortium_rounds WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM consortium_calls WHERE run_id = ? AND role != 'member'", (run_id,))
        conn.execute("UPDATE consortium_runs SET status = 'cancelled', result = ? WHERE id = ?",
                     (json.dumps(cut), run_id))
    record = store.load_run(run_id)
    (round_,) = record.rounds
    assert round_.verdict is None and sorted(m.text for m in round_.members) == ["Member one says 42.",
                                                                              "Member two says 42."]
    assert [c.role for c in round_.calls] == ["member", "member"] and not record.outcome.has_answer
    shown = invoke("consortium", "inspect", run_id).stdout
    assert "Round 1" in shown and "Member two says 42." in shown and "cancelled" in shown
