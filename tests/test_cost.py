"""Dollars per call, round and run, where a person looks (the summary, -u,
--json, runs, inspect, llm logs) and where they are stored; --max-cost stops
a run before a round would take it past the budget. Driven through llm's
real CLI against simulated members priced as real models (model_name), with
long replies so that every cost is measurable; a model without a known
price shows its cost as unknown, never as $0."""

import json
import re

import pytest

from helpers import db_rows, invoke
from llm_consortium.evaluation.simulator import arbiter_xml

pytest.importorskip("genai_prices")

LONG = " ".join(["word"] * 2000)  # 2,000 tokens as the simulated provider counts them
ROUNDS = 4
RUN = ["consortium", "Explain it at length.", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--no-raw"]


def priced_panel(sim, judge="gpt-4o"):
    """Two members priced as gpt-4o-mini and an arbiter that never reaches
    the threshold, so a run goes on until --max-iterations or its budget."""
    sim.add("m1", model_name="gpt-4o-mini", reply=LONG)
    sim.add("m2", model_name="gpt-4o-mini", reply=LONG)
    sim.add("judge", model_name=judge,
            reply=[arbiter_xml(f"Answer of round {n}.", 0.5) for n in range(1, ROUNDS + 1)])
    return sim


def round_costs(sim) -> list[float]:
    """What each round of a run without a budget costs, measured (--json)."""
    result = invoke(*RUN, "--max-iterations", str(ROUNDS), "--json")
    assert result.exit_code == 0, result.stderr
    costs = [iteration["usage"]["cost_usd"] for iteration in json.loads(result.stdout)["iterations"]]
    assert len(costs) == ROUNDS and all(cost > 0 for cost in costs)
    return costs


def test_max_cost_stops_before_a_round_would_pass_the_budget(sim):
    costs = round_costs(priced_panel(sim))
    budget = costs[0] + costs[1] + costs[2] / 2  # room for two rounds, not a third
    before = len(priced_panel(sim).calls("gpt-4o-mini"))
    result = invoke(*RUN, "--max-iterations", str(ROUNDS), "--max-cost", str(budget), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    meta = data["metadata"]
    assert meta["iteration_count"] == 2 and len(sim.calls("gpt-4o-mini")) == before + 4  # 2 rounds, 2 members
    assert 0 < meta["usage"]["cost_usd"] <= budget
    assert meta["max_cost"] == budget
    assert meta["stopped_because"].startswith("round 3 would cost about $")
    assert data["synthesis"]["synthesis"] == "Answer of round 2."  # the best answer so far
    assert f"Stopped early: {meta['stopped_because']}" in result.stderr
    (run,) = db_rows("select * from consortium_runs where id = ?", (meta["run_id"],))
    assert run["stopped_because"] == meta["stopped_because"] and run["iterations"] == 2
    assert run["cost_usd"] == pytest.approx(meta["usage"]["cost_usd"]) and run["unpriced_calls"] == 0


def test_a_first_round_over_the_budget_is_refused_before_any_call(sim):
    priced_panel(sim)
    result = invoke(*RUN, "--max-cost", "0.001")
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: max cost $0.001 is less than the first round's estimated cost, about $")
    assert "2 members" in line and "4 characters a token" in line
    assert sim.requests == []


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_a_bad_max_cost_is_one_line_before_any_call(sim, value):
    priced_panel(sim)
    for command in (RUN, ["consortium", "save", "c", "-m", "m1", "--arbiter", "judge"]):
        result = invoke(*command, "--max-cost", value)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.splitlines() == [
            f"Error: max cost must be a number of dollars, 0 or more (such as 0.05), got {value!r}"
        ]
    assert sim.requests == [] and json.loads(invoke("consortium", "list", "--json").stdout) == []


def test_max_cost_on_a_saved_consortium(sim):
    priced_panel(sim)
    assert invoke("consortium", "save", "c", "-m", "m1", "-m", "m2", "--arbiter", "judge",
                  "--max-iterations", str(ROUNDS), "--max-cost", "$25").exit_code == 0
    assert "Max cost: $25\n" in invoke("consortium", "show", "c").stdout
    first = invoke("-m", "c", "q")  # the saved budget is far off: every round runs
    assert first.exit_code == 0, first.stderr
    costs = [row["cost"] for row in db_rows(
        "select round, sum(cost_usd) as cost from consortium_calls group by round order by round")]
    assert len(costs) == ROUNDS
    budget = costs[0] + costs[1] / 2  # room for one round
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("Only round.", 0.5))
    second = invoke("-m", "c", "-o", "max_cost", str(budget), "q")
    assert second.exit_code == 0 and second.stdout == "Only round.\n"
    run = db_rows("select * from consortium_runs order by started desc limit 1")[0]
    assert run["iterations"] == 1 and run["stopped_because"].startswith("round 2 would cost about $")
    assert run["cost_usd"] <= budget
    for value in ("abc", "-1"):
        bad = invoke("-m", "c", "-o", "max_cost", value, "q")
        assert bad.exit_code == 1 and bad.stderr.splitlines() == [
            f"Error: max cost must be a number of dollars, 0 or more (such as 0.05), got {value!r}"
        ]
    assert len(db_rows("select id from consortium_runs")) == 2  # the bad values called nothing


def test_cost_is_shown_stored_and_logged(sim):
    priced_panel(sim)
    result = invoke(*RUN, "--max-iterations", "1", "-u")
    assert result.exit_code == 0, result.stderr
    (run,) = db_rows("select * from consortium_runs")
    calls = db_rows("select role, model, cost_usd from consortium_calls")
    assert [c["role"] for c in calls] == ["member", "member", "arbiter"] and all(c["cost_usd"] > 0 for c in calls)
    assert run["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls))
    assert run["priced_usd"] == pytest.approx(run["cost_usd"]) and run["unpriced_calls"] == 0
    shown = re.search(r"· \$(0\.\d+) · [\d.]+ s", result.stderr)  # the summary
    assert shown and float(shown[1]) == pytest.approx(run["cost_usd"], rel=0.05)
    assert re.search(rf"Token usage: [\d,]+ input, [\d,]+ output · \${shown[1]}\n", result.stderr)
    assert re.search(rf"^{run['id'][:8]} .* 1 +\d+ +\${shown[1]}  m1, m2  +Explain it at length\.$",
                     invoke("consortium", "runs").stdout, re.M)
    logged = json.loads(invoke("logs", "-n", "1", "--json").stdout)[0]
    assert json.loads(logged["token_details"])["cost_usd"] == pytest.approx(run["cost_usd"])


def test_an_unpriced_model_shows_unknown_cost_everywhere(sim):
    priced_panel(sim)
    sim.add("homebrew", reply=LONG)  # no model_name: no provider sells it, so no price
    result = invoke("consortium", "q", "-m", "m1", "-m", "homebrew", "--arbiter", "judge", "--max-iterations", "1",
                    "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    usage = data["metadata"]["usage"]
    assert usage["cost_usd"] is None and usage["unpriced"] == 1 and usage["priced_usd"] > 0
    assert data["iterations"][0]["usage"]["cost_usd"] is None
    members = {m["model"]: m["tokens"] for m in data["model_responses"]}
    assert members["homebrew"]["cost_usd"] is None and members["m1"]["cost_usd"] > 0
    assert re.search(r"cost unknown: 1 call unpriced; \$0\.\d+ known", result.stderr)  # the summary
    assert "$0 " not in result.stderr and "$0\n" not in result.stderr
    run_id = data["metadata"]["run_id"]
    (row,) = db_rows("select cost_usd, priced_usd, unpriced_calls from consortium_runs")
    assert row["cost_usd"] is None and row["unpriced_calls"] == 1 and row["priced_usd"] > 0
    costs = {c["model"]: c["cost_usd"] for c in db_rows("select model, cost_usd from consortium_calls")}
    assert costs["homebrew"] is None and costs["m1"] == pytest.approx(members["m1"]["cost_usd"])
    line = invoke("consortium", "runs").stdout.splitlines()[1]  # below the header; a threshold note follows
    assert re.search(r"  ≥\$0\.\d+  m1, homebrew  ", line)  # at least what was priced
    shown = invoke("consortium", "inspect", run_id[:8]).stdout
    assert re.search(r"^Cost: cost unknown: 1 call unpriced; \$0\.\d+ known$", shown, re.M)
    assert re.search(r"Round 1 · cost unknown: 1 call unpriced; \$0\.\d+ known", shown)
    assert re.search(r"^\[member homebrew #1\] [\d.]+ s · cost unknown$", shown, re.M)
    assert re.search(r"^\[member m1 #1\] [\d.]+ s · \$0\.\d+$", shown, re.M)
    record = json.loads(invoke("consortium", "inspect", run_id[:8], "--json").stdout)
    assert record["cost_usd"] is None and record["rounds"][0]["cost_usd"] is None
    assert record["rounds"][0]["unpriced_calls"] == 1 and record["rounds"][0]["priced_usd"] > 0
    logged = json.loads(invoke("logs", "-n", "1", "--json").stdout)[0]
    assert json.loads(logged["token_details"]) == {
        "cost_usd": None, "priced_usd": usage["priced_usd"], "unpriced_calls": 1}


def test_a_budget_over_unpriced_models_says_so_and_does_not_block(sim):
    sim.add("m1", reply=LONG)
    sim.add("judge", reply=arbiter_xml("Answer.", 0.5))
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--max-iterations", "2",
                    "--max-cost", "0.0001", "--json")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout)["metadata"]
    assert meta["iteration_count"] == 2 and meta["stopped_because"] is None
    assert meta["budget_note"].startswith("the max cost was checked against the known part of the cost only")
    assert result.stderr.count("the max cost was checked") == 1


def test_the_first_round_estimate_counts_the_council_reviews(sim):
    """With three members the council has each member review the others:
    a budget the arbiter's first round fits in can be too small for it."""
    for name in ("m1", "m2", "m3"):
        sim.add(name, model_name="gpt-4o", reply="42")
    sim.add("judge", model_name="gpt-4o-mini", reply=arbiter_xml("42", 0.9))
    command = ["consortium", "q", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge", "--max-cost"]
    refused = invoke(*command, "0.000001")
    arbiter_estimate = float(re.search(r"estimated cost, about \$([\d.]+)", refused.stderr)[1])
    council = invoke(*command, str(arbiter_estimate * 1.5), "--method", "council")
    assert council.exit_code == 1 and "3 members and the judging" in council.stderr
    assert float(re.search(r"estimated cost, about \$([\d.]+)", council.stderr)[1]) > arbiter_estimate * 1.5
    assert sim.requests == []
    assert invoke(*command, str(arbiter_estimate * 1.5)).exit_code == 0  # the arbiter's round fits


def test_runs_marks_a_cost_nothing_priced_as_unknown(sim):
    sim.add("homebrew", reply="answer")  # no model_name: no price for any call
    sim.add("homebrew-judge", reply=arbiter_xml("s", 0.9))
    assert invoke("consortium", "q", "-m", "homebrew", "--arbiter", "homebrew-judge", "--no-raw").exit_code == 0
    (line,) = invoke("consortium", "runs").stdout.splitlines()[1:]
    assert re.search(r"  \?  homebrew    ", line), line
