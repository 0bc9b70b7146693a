"""``llm consortium eval``: whole runs of each method and the baselines,
against simulated members of known accuracy (llm_consortium/evaluation/simeval.py), through
llm's real client."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import llm_consortium
from llm_consortium.evaluation import evalreport
from llm_consortium.storage import store
from llm_consortium.core.answers import tally
from llm_consortium.faces.eval_command import eval_command
from llm_consortium.evaluation.simeval import SimulatedPanel

DATASET = Path(llm_consortium.__file__).parent / "evaluation" / "data" / "sample-eval.jsonl"
ITEMS = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
TRUTH = {item["prompt"]: item["answer"] for item in ITEMS}
ACCURACY = {"sim-strong": 0.9, "sim-middle": 0.7, "sim-weak": 0.5}
MEMBERS = list(ACCURACY)
ALL_MEMBERS = ["-m", "sim-strong", "-m", "sim-middle", "-m", "sim-weak", "--arbiter", "sim-judge"]


@pytest.fixture
def members(sim):
    """The simulated panel, registered on the sim provider."""
    simulated = SimulatedPanel(TRUTH, ACCURACY)
    simulated.add_to(sim)
    return simulated


def run_eval(*args):
    return CliRunner().invoke(eval_command, [str(DATASET), *args], catch_exceptions=False)


def eval_json(*args) -> dict:
    result = run_eval(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_name(data: dict) -> dict:
    return {row["name"]: row for row in data["results"]}


def first_answers(members, items):
    """Each member's first answer to each item: what the member rows are scored on."""
    return [[members.answer(m, item["prompt"]) for m in MEMBERS] for item in items]


def test_whole_runs_and_baselines_on_the_same_answers_then_a_replay_makes_no_call(sim, members):
    items = ITEMS[:12]
    data = eval_json(*ALL_MEMBERS, "--limit", "12")
    rows = by_name(data)
    assert list(rows) == MEMBERS + ["sim-strong×3", "oracle", "vote", "arbiter", "council"]
    answers = first_answers(members, items)
    truth = [item["answer"] for item in items]
    for i, name in enumerate(MEMBERS):
        assert rows[name]["correct_items"] == [int(a[i] == t) for a, t in zip(answers, truth)]
    assert rows["oracle"]["correct_items"] == [int(t in a) for a, t in zip(answers, truth)]

    # Self-MoA: the best member's first answer (the one its own row is scored on, not asked
    # again) and two more samples, majority-voted
    best = data["best_member"]
    assert best == max(MEMBERS, key=lambda m: (rows[m]["correct"], -MEMBERS.index(m)))
    samples = [[members.answer(best, item["prompt"], k) for k in (1, 2, 3)] for item in items]
    assert rows[f"{best}×3"]["correct_items"] == [int(tally(s).winner == t) for s, t in zip(samples, truth)]
    assert rows[f"{best}×3"]["calls"] == 36
    member_calls = {m: len(sim.calls(m)) - sum("FINAL RANKING" in r.user for r in sim.calls(m)) for m in MEMBERS}
    assert member_calls == {m: 12 * (3 if m == best else 1) for m in MEMBERS}  # every answer asked once

    # whole runs: the judge is confident (0.9), so each run has one round; the vote asks it
    # only where the members are not unanimous (2 of 3 is below the 80 % threshold)
    picked = [int(Counter(a).most_common(1)[0][0] == t) for a, t in zip(answers, truth)]
    assert rows["vote"]["correct_items"] == rows["arbiter"]["correct_items"] == picked
    assert rows["council"]["correct_items"] == rows["oracle"]["correct_items"]  # reviewers rank right answers first
    split = sum(len(set(a)) > 1 for a in answers)
    assert [rows[m]["calls"] for m in ("vote", "arbiter", "council")] == [36 + split, 48, 84]
    assert {rows[m]["mean_rounds"] for m in ("vote", "arbiter", "council")} == {1}
    assert all(row["failed"] == row["fallback"] == 0 for row in rows.values())

    # the intervals are the paired bootstrap on those same per-item results
    again = [evalreport.Row(r["name"], r["kind"], correct=[bool(c) for c in r["correct_items"]])
             for r in data["results"]]
    assert evalreport.compare(again).name == best
    for row in again:
        assert rows[row.name]["interval_95"] == [round(x, 4) for x in row.interval]
        low, high = row.interval
        assert low <= row.difference <= high
    assert rows[best]["interval_95"] == [0, 0]
    # simulated models have no price: unknown, never 0
    assert {row["cost_usd_per_item"] for row in rows.values()} == {None}
    assert rows["vote"]["unpriced_items"] == 12
    assert data["recommendation"].startswith("None: the data cannot tell") and data["calibration"]["arbiter"]["confidence"]["bins"][-1]["count"] == 12

    calls = len(sim.requests)
    assert data["new_calls"] == calls
    replay = run_eval(*ALL_MEMBERS, "--limit", "12", "--json")
    assert len(sim.requests) == calls  # every answer and judgement came from the cache
    replayed = json.loads(replay.stdout)
    assert replayed["new_calls"] == 0
    assert replayed["results"] == data["results"]


def test_the_text_report(sim, members):
    result = run_eval(*ALL_MEMBERS, "--limit", "4", "--methods", "vote")
    assert result.exit_code == 0, result.output
    table, calibration, diversity, recommendation = result.stdout.strip().split("\n\n")
    header, *lines = table.splitlines()
    assert header.split()[:4] == ["row", "kind", "accuracy", "points"]
    assert [line.split()[0] for line in lines] == MEMBERS + ["sim-strong×3", "oracle", "vote"]
    assert all(" unknown " in line for line in lines)  # $/item
    assert calibration.startswith("Calibration") and "vote" in calibration and "ECE" in calibration
    assert diversity.startswith("Member diversity") and "sim-strong ~ sim-weak" in diversity
    # four items cannot tell these members apart (see test_nothing_is_recommended_when_no_row_is_clearly_better...)
    assert recommendation.startswith("Recommendation: None: the data cannot tell which to use")
    assert "answered 4/4" in result.stderr and "vote: ran 4/4" in result.stderr


def test_runs_go_on_for_every_round_and_replay(sim):
    """A judge unsure in the first round (confidence 0.5) and sure later: every run has two rounds."""
    members = SimulatedPanel(TRUTH, ACCURACY)
    members.add_to(sim)

    def judge(request):
        reply = members.judge(request)
        return reply if "# Earlier rounds" in request.user else reply.replace("<confidence>0.9", "<confidence>0.5")

    sim.add("sim-judge", reply=judge)
    args = [*ALL_MEMBERS, "--limit", "3", "--methods", "arbiter"]
    data = eval_json(*args)
    arbiter = by_name(data)["arbiter"]
    assert arbiter["mean_rounds"] == 2 and arbiter["calls"] == 3 * 8  # 3 members and the judge, twice
    second_round = [r for r in sim.calls("sim-weak") if "asked again (round 2)" in r.user]
    assert len(second_round) == 3
    assert data["calibration"]["arbiter"]["confidence"]["bins"][-1]["count"] == 3  # the last round's 0.9
    calls = len(sim.requests)
    assert eval_json(*args)["results"] == data["results"] and len(sim.requests) == calls


def test_dollars_per_item_from_prices(sim):
    """Members known to genai-prices by their provider's name are priced; one that is not makes its rows unknown."""
    # requests carry the provider's name (model_name), which the simulated members answer by
    members = SimulatedPanel(TRUTH, {"gpt-4o-mini": 0.8, "gpt-4o": 0.8, "local": 0.8})
    sim.add("cheap", reply=members.member, model_name="gpt-4o-mini")
    sim.add("dear", reply=members.member, model_name="gpt-4o")
    sim.add("local", reply=members.member)
    sim.add("sim-judge", reply=members.judge, model_name="gpt-4.1-nano")
    data = eval_json("-m", "cheap", "-m", "dear", "--arbiter", "sim-judge", "--limit", "2", "--methods", "arbiter")
    rows = by_name(data)
    assert 0 < rows["cheap"]["cost_usd_per_item"] < rows["dear"]["cost_usd_per_item"]
    assert rows["arbiter"]["cost_usd_per_item"] > rows["cheap"]["cost_usd_per_item"] + rows["dear"]["cost_usd_per_item"]
    with_local = eval_json("-m", "cheap", "-m", "local", "--arbiter", "sim-judge", "--limit", "2", "--methods",
                           "arbiter")
    rows = by_name(with_local)
    assert rows["cheap"]["cost_usd_per_item"] > 0
    assert rows["local"]["cost_usd_per_item"] is None and rows["arbiter"]["cost_usd_per_item"] is None

    # a saved --max-cost below a first round's estimate: every run is refused, as a real one would be
    store.save_config("stingy", {"models": ["cheap", "dear"], "arbiter": "sim-judge", "max_cost": 1e-9})
    calls = len(sim.requests)
    rows = by_name(eval_json("--consortium", "stingy", "--limit", "2", "--methods", "arbiter"))
    assert len(sim.requests) == calls  # the members' answers are cached; no run started
    assert rows["arbiter"]["correct"] == 0 and rows["arbiter"]["failed"] == 2
    assert rows["arbiter"]["problems"][0]["reason"].startswith("max cost $0.000000001 is less than")


def test_unknown_model_is_one_error_line_and_no_call(sim, members):
    result = run_eval("-m", "sim-strong", "-m", "no-such-model", "--arbiter", "sim-judge")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Unknown model: no-such-model (see 'llm models' for the installed ones)"
    ]
    assert sim.requests == []


def test_plot_without_matplotlib_fails_before_any_call(sim, members, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = run_eval(*ALL_MEMBERS, "--plot", "chart.png")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["Error: --plot needs matplotlib: llm install matplotlib"]
    assert sim.requests == []


def test_plot_is_saved(sim, members, tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "chart.png"
    result = run_eval(*ALL_MEMBERS, "--limit", "3", "--methods", "vote", "--plot", str(chart))
    assert result.exit_code == 0, result.output
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_saved_consortium_limit_and_samples(sim, members):
    store.save_config("trio", {"models": ["sim-strong:2", "sim-weak"], "arbiter": "sim-judge"})
    data = eval_json("--consortium", "trio", "--limit", "5", "--methods", "arbiter", "--samples", "2")
    assert list(by_name(data)) == ["sim-strong", "sim-strong#2", "sim-weak", "sim-strong×2", "oracle", "arbiter"]
    assert data["members"] == ["sim-strong", "sim-strong#2", "sim-weak"]
    # the two samples of the Self-MoA baseline are the consortium's own two instances
    assert len(sim.calls("sim-strong")) == 10 and len(sim.calls("sim-judge")) == 5
    calls = len(sim.requests)
    assert eval_json("--consortium", "trio", "--limit", "5", "--methods", "arbiter", "--samples", "2")["results"] \
        == data["results"]
    assert len(sim.requests) == calls == 20


def test_missing_consortium_or_arbiter(sim, members):
    assert run_eval("--consortium", "nope").stderr.strip() == (
        "Error: No saved consortium named 'nope' (see 'llm consortium list')"
    )
    assert "need --arbiter MODEL" in run_eval("-m", "sim-strong", "-m", "sim-weak").stderr
    # the vote too: it asks the arbiter when there is no clear majority
    assert "need --arbiter MODEL" in run_eval("-m", "sim-strong", "-m", "sim-weak", "--methods", "vote").stderr
    assert "Give the members" in run_eval("--arbiter", "sim-judge").stderr
    assert "Unknown method debate" in run_eval(*ALL_MEMBERS, "--methods", "vote,debate").stderr
    assert sim.requests == []


def test_failed_answers_count_as_wrong_and_are_asked_once_per_eval(sim, members):
    sim.add("sim-broken", status=400, error_message="bad request")
    args = ["-m", "sim-strong", "-m", "sim-broken", "--arbiter", "sim-judge", "--methods", "vote", "--limit", "4"]
    data = eval_json(*args)
    rows = by_name(data)
    assert rows["sim-broken"]["correct"] == 0 and rows["sim-broken"]["failed"] == 4
    assert rows["sim-strong"]["failed"] == 0
    assert {p["reason"] for p in rows["sim-broken"]["problems"]} == {"BadRequestError: Error code: 400 - bad request"}
    assert len(sim.calls("sim-broken")) == 4  # once per item, though the vote's runs ask it too
    text = run_eval(*args).stdout
    assert "sim-broken failed on items 1-4: BadRequestError: Error code: 400 - bad request" in text
    assert len(sim.calls("sim-strong")) == 8  # 4 answers and the Self-MoA's second samples, cached
    assert len(sim.calls("sim-broken")) == 8  # asked again by the second eval: failures are not cached


def test_judgements_that_fell_back_are_counted_and_listed_per_method(sim, members):
    refused, unreadable = ITEMS[1]["prompt"], ITEMS[2]["prompt"]

    def flaky_judge(request):
        from llm_consortium.evaluation.simeval import original_prompt

        asked = original_prompt(request.user)
        if asked == refused:
            raise ValueError("no judgement here")  # the sim answers it with HTTP 400
        if asked == unreadable:
            return "I would rather not say."
        return members.judge(request)

    sim.add("sim-judge", reply=flaky_judge)
    args = [*ALL_MEMBERS, "--limit", "4"]
    data = eval_json(*args)
    rows = by_name(data)
    for name in MEMBERS + ["oracle"]:
        assert (rows[name]["failed"], rows[name]["fallback"]) == (0, 0)
    refusal = "BadRequestError: Error code: 400 - reply callable raised ValueError('no judgement here')"
    unread = "the arbiter's reply could not be read, even after a reminder of the format"
    for method in ("arbiter", "council"):
        assert [(p["item"], p["kind"], p["reason"]) for p in rows[method]["problems"]] == [
            (2, "fallback", f"the arbiter failed: {refusal}"), (3, "fallback", unread)]
    # the vote asks the arbiter only on the items without a clear majority
    answers = first_answers(members, ITEMS[:4])
    split = [n for n in (2, 3) if len(set(answers[n - 1])) > 1]
    assert [p["item"] for p in rows["vote"]["problems"]] == split
    # the members' majority decided those items, and is scored as that answer
    majority = [Counter(a).most_common(1)[0][0] == item["answer"] for a, item in zip(answers, ITEMS)]
    assert rows["arbiter"]["correct_items"] == [int(m) for m in majority]
    below = run_eval(*args).stdout.split("\n\n")[-1].splitlines()
    assert below[0].startswith("Failed (scored as wrong) or fell back to the members' majority")
    assert f"  arbiter fell back on item 3: {unread}" in below


def test_an_item_every_member_failed_is_failed_for_every_row_and_never_correct(sim, members):
    lost = ITEMS[0]["prompt"]

    def unlucky(request):
        if request.user == lost:
            raise ValueError("lost")
        return members.member(request)

    for name in MEMBERS:
        sim.add(name, reply=unlucky)
    data = eval_json(*ALL_MEMBERS, "--limit", "3")
    for row in data["results"]:
        assert (row["failed"], row["fallback"]) == (1, 0), row["name"]
        assert [(p["item"], p["kind"]) for p in row["problems"]] == [(1, "failed")]
        assert row["items"] == 3 and row["correct_items"][0] == 0
    rows = by_name(data)
    assert rows["oracle"]["problems"][0]["reason"] == "every member failed"
    for method in ("vote", "arbiter", "council"):
        assert rows[method]["problems"][0]["reason"].startswith("Every member failed in round 1")


def test_max_concurrency_must_be_a_positive_whole_number(sim, members):
    for value in ("0", "abc", "-2", "1.5"):
        result = run_eval(*ALL_MEMBERS, "--max-concurrency", value)
        assert result.exit_code == 1, value
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("Error: max concurrency must be"), result.stderr
    assert sim.requests == []


def max_overlap(requests) -> int:
    """The most requests the provider was answering at once."""
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def test_max_concurrency_bounds_calls_across_items_and_methods(sim, members):
    members.add_to(sim, latency=0.2)
    args = ["--limit", "3", "--methods", "arbiter", "--samples", "1"]
    result = run_eval(*ALL_MEMBERS, *args, "--max-concurrency", "2")
    assert result.exit_code == 0, result.output
    assert len(sim.requests) == 12 and max_overlap(sim.requests) == 2

    # the default is the consortium's own setting
    store.save_config("one-at-a-time", {"models": MEMBERS, "arbiter": "sim-judge", "max_concurrency": 1})
    result = run_eval("--consortium", "one-at-a-time", "--limit", "5", "--methods", "arbiter", "--samples", "1")
    assert result.exit_code == 0, result.output
    assert len(sim.requests) == 12 + 8  # the members' answers to items 1-3 and their judgements were cached
    calls = sorted(sim.requests[12:], key=lambda r: r.started)
    assert all(earlier.finished <= later.started for earlier, later in zip(calls, calls[1:]))


def test_bad_dataset_line_names_the_line(sim, members, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n{"prompt": "no answer"}\n')
    result = CliRunner().invoke(eval_command, [str(data), *ALL_MEMBERS])
    assert result.exit_code == 1
    assert "line 2" in result.stderr and sim.requests == []


def test_sample_flag_uses_the_shipped_dataset(sim, members):
    result = CliRunner().invoke(eval_command, ["--sample", *ALL_MEMBERS, "--methods", "vote", "--limit", "2",
                                               "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dataset"] == str(DATASET)
    for args in ([], ["--sample", str(DATASET)]):
        wrong = CliRunner().invoke(eval_command, [*args, *ALL_MEMBERS])
        assert wrong.exit_code == 2 and "Give a DATASET file or --sample" in wrong.stderr


def recommendation_of(*args) -> tuple[str, str]:
    """The recommendation in the text report and in --json."""
    text = run_eval(*args)
    assert text.exit_code == 0, text.output
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("Recommendation: ")]
    return line.removeprefix("Recommendation: "), eval_json(*args)["recommendation"]


def test_nothing_is_recommended_when_every_row_scores_0(sim):
    """It recommended "Use demo-a alone" with every system at 0.000."""
    SimulatedPanel(TRUTH, {"sim-a": 0.0, "sim-b": 0.0}).add_to(sim)
    text, json_ = recommendation_of("-m", "sim-a", "-m", "sim-b", "--arbiter", "sim-judge", "--limit", "6",
                                    "--methods", "vote")
    assert text == json_ == "None: every row scored 0 on these 6 items, so the data cannot tell which to use."


def test_nothing_is_recommended_when_no_row_is_clearly_better_than_another(sim):
    """Three items cannot tell members of 0.9 and 0.5 apart: every interval overlaps."""
    SimulatedPanel(TRUTH, {"sim-strong": 0.9, "sim-weak": 0.5}).add_to(sim)
    args = ["-m", "sim-strong", "-m", "sim-weak", "--arbiter", "sim-judge", "--limit", "3", "--methods", "vote"]
    text, json_ = recommendation_of(*args)
    assert text == json_
    assert text.startswith("None: the data cannot tell which to use: no row is clearly more accurate than "
                           "another on these 3 items")
    rows = [evalreport.Row(r["name"], r["kind"], correct=[bool(c) for c in r["correct_items"]])
            for r in eval_json(*args)["results"]]
    best = evalreport.compare(rows)
    assert len({r.accuracy for r in rows}) > 1  # the accuracies differ; their intervals do not tell
    assert not any(evalreport.clearly_better(a, b) for a in rows for b in rows if "oracle" not in (a.kind, b.kind))
    assert not evalreport.data_can_tell(rows, best)


def test_a_row_clearly_better_than_another_gets_a_recommendation(sim):
    SimulatedPanel(TRUTH, {"sim-right": 1.0, "sim-wrong": 0.0}).add_to(sim)
    text, json_ = recommendation_of("-m", "sim-right", "-m", "sim-wrong", "--arbiter", "sim-judge", "--limit", "6",
                                    "--methods", "vote")
    assert text == json_ and text.startswith("Use sim-right alone: no method is clearly more accurate")
