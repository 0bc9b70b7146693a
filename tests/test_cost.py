"""Dollars per call, round and run, where a person looks (the summary, -u,
--json, runs, inspect, llm logs) and where they are stored; --max-cost binds:
every call is sent max_tokens from what is left, a judge that cannot be paid
is not called, no round starts that would pass the budget, and models whose
price is unknown are refused unless --allow-unpriced. Driven through llm's
real CLI against simulated members priced as real models (model_name), with
long replies so that every cost is measurable (the simulated provider stops
a reply at max_tokens, as providers do); a model without a known price shows
its cost as unknown, never as $0."""

import json
import re

import pytest

from helpers import db_rows, invoke
from llm_consortium.core.budget import JUDGE_MIN_TOKENS, MAX_REPLY_TOKENS
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


def bad_max_cost(value) -> str:
    return f"Error: max cost must be a plain decimal number of dollars, such as 0.05 or 2, got {value!r}"


def round_costs(sim) -> list[float]:
    """What each round of a run without a budget costs, measured (--json)."""
    result = invoke(*RUN, "--max-iterations", str(ROUNDS), "--json")
    assert result.exit_code == 0, result.stderr
    costs = [iteration["usage"]["cost_usd"] for iteration in json.loads(result.stdout)["iterations"]]
    assert len(costs) == ROUNDS and all(cost > 0 for cost in costs)
    return costs


def test_max_cost_stops_before_a_round_would_pass_the_budget(sim):
    # A cheap judge: the budget leaves the members' replies uncut, so that rounds cost what they did without it.
    costs = round_costs(priced_panel(sim, judge="gpt-4.1-nano"))
    budget = costs[0] + costs[1] + costs[2] / 2  # room for two rounds, not a third
    before = len(priced_panel(sim, judge="gpt-4.1-nano").calls("gpt-4o-mini"))
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


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "", "1_0", "1e3", "0x1", "-0.5", "+1", "Infinity",
                                   "1,5", "\u0661", "1.5.0"])
def test_a_bad_max_cost_is_one_line_before_any_call(sim, value):
    """Only plain decimals: Python's float would read 1_0 as 10 dollars, 1e3 as 1,000."""
    priced_panel(sim)
    for command in (RUN, ["consortium", "save", "c", "-m", "m1", "--arbiter", "judge"]):
        result = invoke(*command, "--max-cost", value)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.splitlines() == [bad_max_cost(value)]
    assert sim.requests == [] and json.loads(invoke("consortium", "list", "--json").stdout) == []


@pytest.mark.parametrize("value, dollars", [("0.05", 0.05), ("2", 2.0), ("1.5", 1.5), ("$25", 25.0), (".5", 0.5),
                                            ("0", 0.0)])
def test_a_max_cost_is_a_plain_decimal(value, dollars):
    from llm_consortium.core.config import parse_max_cost

    assert parse_max_cost(value) == dollars


def test_max_cost_on_a_saved_consortium(sim):
    priced_panel(sim, judge="gpt-4.1-nano")
    assert invoke("consortium", "save", "c", "-m", "m1", "-m", "m2", "--arbiter", "judge",
                  "--max-iterations", str(ROUNDS), "--max-cost", "$25").exit_code == 0
    assert "Max cost: $25\n" in invoke("consortium", "show", "c").stdout
    first = invoke("-m", "c", "q")  # the saved budget is far off: every round runs
    assert first.exit_code == 0, first.stderr
    costs = [row["cost"] for row in db_rows(
        "select round, sum(cost_usd) as cost from consortium_calls group by round order by round")]
    assert len(costs) == ROUNDS
    budget = costs[0] + costs[1] / 2  # room for one round
    sim.add("judge", model_name="gpt-4.1-nano", reply=arbiter_xml("Only round.", 0.5))
    second = invoke("-m", "c", "-o", "max_cost", str(budget), "q")
    assert second.exit_code == 0 and second.stdout == "Only round.\n"
    run = db_rows("select * from consortium_runs order by started desc limit 1")[0]
    assert run["iterations"] == 1 and run["stopped_because"].startswith("round 2 would cost about $")
    assert run["cost_usd"] <= budget
    for value in ("abc", "-1", "1_0"):
        bad = invoke("-m", "c", "-o", "max_cost", value, "q")
        assert bad.exit_code == 1 and bad.stderr.splitlines() == [bad_max_cost(value)]
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
    assert re.search(rf"^{run['id'][:8]} .* 1 +[\d,]+ +\${shown[1]}  m1, m2  +Explain it at length\.$",
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


def test_under_max_cost_unpriced_models_are_refused_before_any_call(sim):
    """The budget cannot count a model without a known price, nor bound a
    model without a max_tokens option (here a saved consortium as a member)."""
    priced_panel(sim)
    sim.add("homebrew", reply=LONG)  # no model_name: no price
    assert invoke("consortium", "save", "inner", "-m", "m1", "--arbiter", "judge").exit_code == 0
    for members, named in ((["homebrew"], "homebrew has none"), (["m1", "inner"], "inner has none"),
                           (["homebrew", "inner"], "homebrew, inner have none")):
        command = ["consortium", "q", "--arbiter", "judge", "--max-cost", "1"]
        for member in members:
            command += ["-m", member]
        result = invoke(*command)
        assert result.exit_code == 1 and result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"Error: --max-cost needs the price of every model, and {named} "), line
        assert "--allow-unpriced (-o allow_unpriced 1)" in line
    sim.add("homebrew-judge", reply=arbiter_xml("Answer.", 0.9))
    judged = invoke("consortium", "q", "-m", "m1", "--arbiter", "homebrew-judge", "--max-cost", "1")
    assert judged.exit_code == 1 and "homebrew-judge has none" in judged.stderr
    assert sim.requests == []


def test_allow_unpriced_runs_and_says_the_check_was_partial(sim):
    sim.add("m1", reply=LONG)
    sim.add("judge", reply=arbiter_xml("Answer.", 0.5))
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--max-iterations", "2",
                    "--max-cost", "0.0001", "--allow-unpriced", "--json")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout)["metadata"]
    assert meta["iteration_count"] == 2 and meta["stopped_because"] is None
    assert meta["budget_note"].startswith("the max cost was checked against the known part of the cost only")
    assert result.stderr.count("the max cost was checked") == 1
    assert all("max_tokens" not in r.body for r in sim.requests)  # unpriced: nothing to compute it from


def test_allow_unpriced_is_saved_and_an_o_option(sim):
    sim.add("homebrew", reply="42")
    sim.add("judge", reply=arbiter_xml("42", 0.9))
    assert invoke("consortium", "save", "strict", "-m", "homebrew", "--arbiter", "judge", "--max-cost", "1"
                  ).exit_code == 0
    refused = invoke("-m", "strict", "q")
    assert refused.exit_code == 1 and "homebrew, judge have none" in refused.stderr and sim.requests == []
    allowed = invoke("-m", "strict", "-o", "allow_unpriced", "1", "q")
    assert allowed.exit_code == 0 and allowed.stdout == "42\n", allowed.stderr
    assert invoke("consortium", "save", "lenient", "-m", "homebrew", "--arbiter", "judge", "--max-cost", "1",
                  "--allow-unpriced").exit_code == 0
    assert "Allow unpriced: True" in invoke("consortium", "show", "lenient").stdout
    assert invoke("consortium", "save", "lenient", "--max-iterations", "2").exit_code == 0  # an update keeps it
    again = invoke("-m", "lenient", "q")
    assert again.exit_code == 0 and again.stdout == "42\n", again.stderr
    assert invoke("-m", "lenient", "-o", "allow_unpriced", "maybe", "q").exit_code == 1  # llm's own check


def test_every_member_and_judge_call_is_sent_max_tokens_from_the_budget(sim):
    """Members share what is left equally; every judging call (the council's
    reviewers and chairman too) gets at least JUDGE_MIN_TOKENS."""
    for name in ("m1", "m2", "m3"):
        sim.add(name, model_name="gpt-4o-mini", reply=LONG)
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("42", 0.9))
    run = ["consortium", "q", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge", "--method", "council"]
    assert invoke(*run).exit_code == 0
    assert all("max_tokens" not in r.body for r in sim.requests)  # no budget: as before
    sim.requests.clear()
    result = invoke(*run, "--max-cost", "0.04", "--json")
    assert result.exit_code == 0, result.stderr
    members = [r for r in sim.calls("gpt-4o-mini") if "FINAL RANKING" not in r.text]
    reviewers = [r for r in sim.calls("gpt-4o-mini") if "FINAL RANKING" in r.text]
    (chair,) = sim.calls("gpt-4o")
    assert len(members) == 3 and len(reviewers) == 6  # a reply without a ranking is asked for once more
    (share,) = {r.body["max_tokens"] for r in members}  # the same for each
    assert 500 <= share < 2000  # the budget cut the members' 2,000-token replies
    assert all(JUDGE_MIN_TOKENS <= r.body["max_tokens"] <= MAX_REPLY_TOKENS for r in reviewers + [chair])
    assert json.loads(result.stdout)["metadata"]["usage"]["cost_usd"] <= 0.04
    sim.requests.clear()
    assert invoke(*run, "--max-cost", "100", "-o", "max_tokens", "77").exit_code == 0
    assert {r.body["max_tokens"] for r in sim.calls("gpt-4o-mini") if "FINAL RANKING" not in r.text} == {77}
    assert sim.calls("gpt-4o")[0].body["max_tokens"] == MAX_REPLY_TOKENS  # the most any call is sent


CHATTY = " ".join(["word"] * 100_000)  # 100,000 tokens: 200 times the 500 a first round is estimated at


def test_max_cost_binds_on_chatty_members(sim):
    """The issue's case: --max-cost 0.05 ended at $0.447, members far
    chattier than estimated, the arbiter called after the budget had passed."""
    sim.add("m1", model_name="gpt-4o-mini", reply=CHATTY)
    sim.add("m2", model_name="gpt-4o-mini", reply=CHATTY)
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("An answer.", 0.5))
    result = invoke("consortium", "Explain it at length.", "-m", "m1", "-m", "m2", "--arbiter", "judge",
                    "--max-cost", "0.05", "--json")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout)["metadata"]
    (run,) = db_rows("select * from consortium_runs")
    recorded = sum(c["cost_usd"] for c in db_rows("select cost_usd from consortium_calls"))
    assert 0 < recorded <= 0.05 and run["cost_usd"] == pytest.approx(recorded)
    assert meta["usage"]["cost_usd"] == pytest.approx(recorded)
    assert meta["iteration_count"] < 3  # --max-iterations 3: the budget stopped it
    assert meta["stopped_because"].startswith(f"round {meta['iteration_count'] + 1} would leave each member at most")
    assert run["stopped_because"] == meta["stopped_because"]


def spendthrift_prompt(words: int) -> str:
    """A prompt that costs twice its estimate: the simulated provider counts
    a word a token, the estimate is a token per 4 characters ("a " is 2)."""
    return " ".join(["a"] * words)


def test_a_judge_that_cannot_be_paid_is_not_called_and_there_is_no_answer(sim):
    sim.add("m1", model_name="gpt-4o-2024-08-06", reply="42")  # priced as gpt-4o
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("42", 0.9))
    result = invoke("consortium", spendthrift_prompt(8000), "-m", "m1", "--arbiter", "judge", "--max-cost", "0.038",
                    "--json")
    data = json.loads(result.stdout)
    meta = data["metadata"]
    assert len(sim.calls("gpt-4o-2024-08-06")) == 1 and sim.calls("gpt-4o") == []  # the judge was not called
    assert meta["stopped_because"].startswith("the arbiter (judge) of round 1 was not called: the $")
    assert f"a reply of {JUDGE_MIN_TOKENS} tokens" in meta["stopped_because"]
    assert data["synthesis"]["synthesis"] == "" and data["synthesis"]["parse_ok"] is False  # no answer
    assert meta["iteration_count"] == 1 and data["model_responses"][0]["text"] == "42"
    assert meta["usage"]["cost_usd"] <= 0.038


def test_a_judge_that_cannot_be_paid_leaves_the_last_answer(sim):
    sim.add("m1", model_name="gpt-4o-2024-08-06", reply="42")  # priced as gpt-4o
    sim.add("judge", model_name="gpt-4o", reply=[arbiter_xml("Round one's answer.", 0.5),
                                                 arbiter_xml("Round two's answer.", 0.9)])
    result = invoke("consortium", spendthrift_prompt(4000), "-m", "m1", "--arbiter", "judge", "--max-cost", "0.044",
                    "--json")
    data = json.loads(result.stdout)
    meta = data["metadata"]
    assert meta["stopped_because"].startswith("the arbiter (judge) of round 2 was not called: the $"), meta
    assert len(sim.calls("gpt-4o-2024-08-06")) == 2 and len(sim.calls("gpt-4o")) == 1  # judged once
    assert data["synthesis"]["synthesis"] == "Round one's answer."
    assert meta["iteration_count"] == 2 and [i["round"] for i in data["iterations"]] == [1, 2]
    assert meta["usage"]["cost_usd"] <= 0.044
    assert "Stopped early: the arbiter (judge) of round 2 was not called" in \
        invoke("consortium", "inspect", meta["run_id"][:8]).stdout
    (run,) = db_rows("select synthesis, stopped_because, iterations from consortium_runs")
    assert run == {"synthesis": "Round one's answer.", "stopped_because": meta["stopped_because"], "iterations": 2}


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


def test_eval_counts_a_run_whose_judge_the_budget_could_not_pay_as_failed(sim, tmp_path):
    from click.testing import CliRunner

    from llm_consortium.faces.eval_command import eval_command
    from llm_consortium.storage import store

    sim.add("m1", model_name="gpt-4o-2024-08-06", reply="42")  # priced as gpt-4o
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("42", 0.9))
    dataset = tmp_path / "items.jsonl"
    dataset.write_text(json.dumps({"prompt": spendthrift_prompt(8000), "answer": "42"}) + "\n")
    store.save_config("stingy", {"models": ["m1"], "arbiter": "judge", "max_cost": 0.038})
    result = CliRunner().invoke(eval_command, [str(dataset), "--consortium", "stingy", "--methods", "arbiter",
                                               "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (arbiter,) = [row for row in json.loads(result.stdout)["results"] if row["name"] == "arbiter"]
    assert arbiter["failed"] == 1 and sim.calls("gpt-4o") == []
    assert arbiter["problems"][0]["reason"].startswith("the arbiter (judge) of round 1 was not called")


def test_a_first_round_whose_members_would_be_cut_short_is_refused_before_any_call(sim):
    """A budget the first round's estimate fits in, but not once the judge's
    shortest reply (JUDGE_MIN_TOKENS, more than the 500 estimated) is kept
    for it: the members could not write a usual answer."""
    priced_panel(sim)
    refused = invoke(*RUN, "--max-cost", "0.000001")
    estimate = float(re.search(r"estimated cost, about \$([\d.]+)", refused.stderr)[1])
    result = invoke(*RUN, "--max-cost", str(round(estimate * 1.1, 6)))
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert re.match(r"Error: round 1 would leave each member at most \d+ tokens of reply, fewer than the 500 of a "
                    rf"usual answer: .* the judging's shortest reply \({JUDGE_MIN_TOKENS} tokens\), about \$", line)
    assert sim.requests == []
