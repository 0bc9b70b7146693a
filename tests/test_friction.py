"""Everyday friction found by first-time users (issue 10), through llm's
real CLI and client against the simulated provider."""

import sqlite3

import llm
import pytest

from llm_consortium.evaluation.simulator import arbiter_xml
from helpers import db_rows, invoke, python_run


def on_one_terminal(args):
    """Run `llm` in this process with stdout and stderr shown as on one
    terminal (LLM_CONSORTIUM_TERMINAL), as in a terminal window; return
    everything it showed, in order."""
    result = invoke(*args, color=True, terminal="stdout,stderr")
    assert result.exit_code == 0, result.output
    return result.output


def test_on_a_terminal_the_answer_comes_last(sim):
    sim.add("m1", reply="Member one rambles at length.")
    sim.add("judge", reply=arbiter_xml("THE ANSWER", 0.9, analysis="Checked."))
    shown = on_one_terminal(["consortium", "q", "-m", "m1", "--arbiter", "judge"])
    assert shown.rstrip().endswith("THE ANSWER")
    assert shown.index("Member one rambles") < shown.index("Confidence 0.90") < shown.rindex("THE ANSWER")


def test_default_consortium_keeps_what_the_flags_do_not_set(sim):
    sim.add_many(["m1", "m2", "m3"], reply="answer")
    sim.add_many(["judge", "judge2"], reply=arbiter_xml("s", 0.9))
    assert invoke("consortium", "save", "d", "-m", "m1", "-m", "m2", "--arbiter", "judge").exit_code == 0
    assert invoke("consortium", "default", "d").exit_code == 0
    assert invoke("consortium", "q", "--arbiter", "judge2").exit_code == 0
    assert {r.model for r in sim.requests} == {"m1", "m2", "judge2"}  # the default's members kept
    sim.requests.clear()
    # With -m nothing comes from the default (issue 19), its arbiter neither: the built-in one is not installed.
    result = invoke("consortium", "q", "-m", "m3")
    assert result.exit_code == 1 and "claude-3-opus-20240229" in result.stderr and sim.requests == []
    assert invoke("consortium", "q", "-m", "m3", "--arbiter", "judge2").exit_code == 0
    assert {r.model for r in sim.requests} == {"m3", "judge2"}


def test_save_changes_one_setting_of_an_existing_consortium(sim):
    sim.add("m1", reply="answer")
    sim.add("judge", reply=arbiter_xml("s", 0.9))
    assert invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge", "--method", "vote").exit_code == 0
    result = invoke("consortium", "save", "c", "--confidence-threshold", "0.9")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Updated consortium c")
    shown = invoke("consortium", "show", "c").stdout
    assert "Confidence threshold: 0.9" in shown and "Method: vote" in shown and "  m1" in shown


@pytest.mark.empty_user_dir  # it writes an older version's table itself
def test_unsaved_runs_do_not_pile_up_models_and_old_ones_are_cleaned_up(sim):
    # Models left behind by earlier versions, one per unsaved run's settings.
    path = llm.user_dir() / "logs.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE consortium_configs (name TEXT PRIMARY KEY, config TEXT, created_at TEXT)")
    for i in range(5):
        conn.execute("INSERT INTO consortium_configs VALUES (?, ?, '')",
                     (f"consortium-{i:010x}", '{"models": ["m1"], "arbiter": "judge", "ad_hoc": true}'))
    conn.execute("INSERT INTO consortium_configs VALUES ('mine', '{\"models\": [\"m1\"], \"arbiter\": \"judge\"}', '')")
    conn.commit()
    conn.close()
    sim.add_many(["m1", "m2"], reply="answer")
    sim.add("judge", reply=arbiter_xml("The answer.", 0.9))
    for threshold in ("0.5", "0.6", "0.7"):
        assert invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--confidence-threshold", threshold).exit_code == 0
    assert invoke("consortium", "q2", "-m", "m2", "--arbiter", "judge").exit_code == 0
    names = [r["name"] for r in db_rows("SELECT name FROM consortium_configs ORDER BY name")]
    assert names == ["consortium-last", "mine"]
    models = invoke("models").stdout
    assert models.count("consortium-") == 1
    follow = invoke("-c", "and then?")  # continues the last unsaved run, with its settings
    assert follow.exit_code == 0 and follow.stdout == "The answer.\n"
    assert sim.calls("m2")[-1].user == "and then?" and len(sim.calls("m1")) == 3


def test_a_prompt_that_is_a_subcommand_name(sim):
    sim.add("m1", reply="answer")
    sim.add("judge", reply=arbiter_xml("Shown.", 0.9))
    result = invoke("consortium", "show")
    assert result.exit_code == 2
    assert "use: llm consortium run 'show'" in result.stderr
    asked = invoke("consortium", "run", "show", "-m", "m1", "--arbiter", "judge")
    assert asked.exit_code == 0 and asked.stdout == "Shown.\n"
    assert sim.calls("m1")[0].user == "show"


PYTHON_API_TWICE = """
import asyncio, sys, time, llm
from llm_consortium import ConsortiumOrchestrator

class Slow(llm.Model):
    model_id = "slow-sync"
    def execute(self, prompt, stream, response, conversation):
        time.sleep(0.4)
        yield "late"

class Plugin:
    @llm.hookimpl
    def register_models(self, register):
        register(Slow())

llm.pm.register(Plugin(), name="slow-sync")
orchestrator = ConsortiumOrchestrator(models=["m1", "m2", "slow-sync"], arbiter="judge", quorum=2)
for _ in range(3):
    print(asyncio.run(orchestrator.orchestrate("q"))["synthesis"]["synthesis"])
time.sleep(0.6)  # the abandoned sync call ends after its loop has closed
"""


@pytest.mark.slow  # what the interpreter prints as it exits, after the abandoned call
def test_python_api_twice_with_asyncio_run_is_quiet(sim):
    sim.add_many(["m1", "m2"], reply="answer", latency=0.05)
    sim.add("judge", reply=arbiter_xml("s", 0.9))
    proc = python_run(PYTHON_API_TWICE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "s\ns\ns\n"
    assert proc.stderr == ""


def test_an_unknown_option_of_a_subcommand_gets_no_prompt_hint(sim):
    for args in (["rejudge", "7926cddd", "--arbiter", "local-a", "--no-raw"], ["show", "c", "--bogus"],
                 ["list", "--bogus"], ["save", "c", "-m", "m1", "--bogus"], ["remove", "c", "--bogus"],
                 ["default", "--bogus"], ["runs", "-n", "many"]):
        result = invoke("consortium", *args)
        assert result.exit_code == 2, args
        assert "Error: No such option" in result.stderr or "Invalid value" in result.stderr, result.stderr
        assert "to ask a consortium" not in result.stderr, args


def test_extra_words_after_a_subcommand_name_get_the_prompt_hint(sim):
    result = invoke("consortium", "list", "extra", "words")
    assert result.exit_code == 2
    assert "unexpected extra arguments" in result.stderr
    assert "(to ask a consortium the prompt 'list', use: llm consortium run 'list')" in result.stderr
