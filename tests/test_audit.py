"""``llm consortium audit``: a run's answers judged again in other orders,
through llm's real client against the simulator, whose scripted arbiters
choose by reading the prompt they were sent."""

import json
import re

import pytest

from helpers import invoke
from llm_consortium import ConsortiumOrchestrator, RunRecorder
from llm_consortium.evaluation.audit import orders, wilson
from llm_consortium.evaluation.simulator import arbiter_xml
from llm_consortium.storage.store import load_run

FIRST = re.compile(r"BEGIN Response A>>>\n(.*?)\n<<<", re.DOTALL)


def first_shown(request):
    """A judge with position bias at its worst: the answer shown first always wins."""
    number = re.search(r"\d+", FIRST.search(request.user).group(1)).group(0)
    return arbiter_xml(f"<answer>{number}</answer>", 0.9)


def past_run(sim, judge, method="arbiter"):
    """A recorded run of three members with three distinct answers."""
    sim.add("m1", reply="Six sevens. <answer>42</answer>")
    sim.add("m2", reply="<answer>41</answer>")
    sim.add("m3", reply="I think <answer>40</answer>")
    sim.add("judge", reply=judge)
    orchestrator = ConsortiumOrchestrator(models=["m1", "m2", "m3"], arbiter="judge", method=method,
                                          observers=[RunRecorder()])
    return orchestrator.orchestrate_sync("What is 6*7?")["metadata"]["run_id"]


def test_a_judge_that_prefers_the_first_answer_flips_more_than_half_the_time(sim):
    parent = past_run(sim, first_shown)
    before = len(sim.requests)
    result = invoke("consortium", "audit", parent[:8], "--shuffles", "5", "--seed", "7")
    assert result.exit_code == 0, result.output
    new = sim.requests[before:]
    assert [r.model for r in new] == ["judge"] * 5  # the members were not asked again
    # every order differs from the run's own, and each is relabelled: A is whichever is shown first
    firsts = [re.search(r"\d+", FIRST.search(r.user).group(1)).group(0) for r in new]
    assert sorted(firsts) == ["40", "40", "41", "41", "42"]  # the five other orders of three answers
    line = result.stdout.strip().splitlines()[-1]
    assert "the winner differed from the run's own in 4 of 5 orders: flip rate 0.80" in line
    audit = load_run(parent).audits[0]
    assert audit.reference == ["m1#1"] and audit.flips == 4 and audit.flip_rate > 0.5
    low, high = audit.interval
    assert (round(low, 2), round(high, 2)) == (0.38, 0.96)  # Wilson, 4 of 5
    assert [s.winner for s in audit.shuffles] == [[s.order[0]] for s in audit.shuffles]
    assert audit.usage.input > 0  # the arbiter's calls, the audit's cost

    shown = invoke("consortium", "inspect", parent[:8]).stdout
    assert "Judge audit (5 orders, arbiter, arbiter judge): the winner differed from the run's own in 4 of 5" in shown


def test_a_fair_judge_never_flips(sim):
    parent = past_run(sim, arbiter_xml("<answer>42</answer>", 0.9))
    result = invoke("consortium", "audit", parent, "--shuffles", "8", "--json")
    assert result.exit_code == 0, result.output
    audit = json.loads(result.stdout)
    assert audit["flips"] == 0 and audit["flip_rate"] == 0.0 and audit["judged"] == 8
    assert audit["interval"][0] == 0.0 and audit["interval"][1] < 0.4
    assert len({tuple(s["order"]) for s in audit["shuffles"]}) == 5  # every other order, then again
    assert load_run(parent).audits[0].flip_rate == 0.0


def test_the_arbiters_groups_identify_the_winner_of_free_text(sim):
    """Free-text answers with no short answer: the synthesis is one member's
    text, and the arbiter's groups put a second member beside it."""
    sim.add("m1", reply="Paris is the capital of France, on the Seine river, since long ago.")
    sim.add("m2", reply="The capital of France is Paris, the largest city of the country.")
    sim.add("m3", reply="Lyon is the capital of France, in my humble and mistaken opinion.")

    def judge(request):
        labels = {re.search(r"\w+", text).group(0): label for label, text in
                  re.findall(r"BEGIN (Response \w)>>>\n(.*?)\n<<<", request.user, re.DOTALL)}
        paris = [labels["Paris"], labels["The"]]
        return arbiter_xml("Paris is the capital of France, on the Seine river, since long ago.", 0.8,
                           groups=[paris, [labels["Lyon"]]])

    sim.add("judge", reply=judge)
    parent = ConsortiumOrchestrator(models=["m1", "m2", "m3"], arbiter="judge", observers=[RunRecorder()]
                                    ).orchestrate_sync("Capital of France?")["metadata"]["run_id"]
    result = invoke("consortium", "audit", parent, "--shuffles", "3", "--json")
    audit = json.loads(result.stdout)
    assert audit["reference"] == ["m1#1", "m2#1"] and audit["flips"] == 0


def test_a_rewritten_answer_reports_only_the_spread_of_confidence(sim):
    sim.add("m1", reply="Paris is the capital of France, on the Seine river, since long ago.")
    sim.add("m2", reply="Lyon is the capital of France, in my humble and mistaken opinion.")
    sim.add("judge", reply=[arbiter_xml("France's capital is Paris, a city on the Seine river.", c)
                            for c in (0.9, 0.6, 0.7)])
    parent = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge", observers=[RunRecorder()]
                                    ).orchestrate_sync("Capital of France?")["metadata"]["run_id"]
    result = invoke("consortium", "audit", parent, "--shuffles", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(
        "the winning answer could not be identified in any order; confidence 0.60–0.70")


def test_a_run_made_with_min_p_is_audited_and_rejudged_without_it(sim):
    from llm_consortium.core import calibrated
    from llm_consortium.storage import store

    sim.add_many(["m1", "m2"], reply="<answer>42</answer>")
    sim.add("judge", reply=arbiter_xml("<answer>42</answer>", 0.9))
    assert invoke("consortium", "save", "sure", "-m", "m1", "-m", "m2", "--arbiter", "judge",
                  "--min-p", "0.5").exit_code == 0
    store.save_calibration("sure", {"fingerprint": calibrated.fingerprint(["m1", "m2"], "judge"), "methods": {
        "arbiter": {"score": "agreement", "points": [[0.0, 0.5], [1.0, 0.9]], "items": 50, "date": "2026-12-06"}}})
    assert invoke("-m", "sure", "What is 6*7?").exit_code == 0
    run_id = store.latest_run_id()
    assert store.load_run(run_id).config["min_p"] == 0.5
    audited = invoke("consortium", "audit", run_id[:8], "--shuffles", "1")
    assert audited.exit_code == 0, audited.stderr  # the audit has no calibration, and needs none
    rejudged = invoke("consortium", "rejudge", run_id[:8])
    assert rejudged.exit_code == 0, rejudged.stderr


def test_the_run_page_shows_the_audit(sim):
    from llm_consortium.faces.web import pages

    parent = past_run(sim, first_shown)
    invoke("consortium", "audit", parent, "--shuffles", "2", "--seed", "1")
    page = str(pages.run_page(load_run(parent), None, [], "csrf"))
    assert "Judge audits" in page and "2 orders, arbiter, arbiter judge" in page
    assert page.count('class="flipped"') == load_run(parent).audits[0].flips


def test_user_errors_are_one_line_before_any_call(sim):
    parent = past_run(sim, arbiter_xml("<answer>42</answer>", 0.9))
    sim.add("solo", reply="<answer>1</answer>")
    solo = ConsortiumOrchestrator(models=["solo"], arbiter="judge", observers=[RunRecorder()]
                                  ).orchestrate_sync("One?")["metadata"]["run_id"]
    sim.add_many(["m1", "m2", "m3"], reply="FINAL RANKING:\n1. Response A")
    council = ConsortiumOrchestrator(models=["m1", "m2", "m3"], arbiter="judge", method="council",
                                     observers=[RunRecorder()]).orchestrate_sync("6*7?")["metadata"]["run_id"]
    before = len(sim.requests)
    for args, error in [
        ((parent, "--arbiter", "no-such-model"), "no-such-model"),
        ((solo,), f"Error: Run {solo[:8]} has fewer than two member answers: no order to change"),
        (("nosuchrun",), "Error: No run matches 'nosuchrun' (see 'llm consortium runs')"),
        ((council,), "Error: A council run cannot be audited: its peer review asks the members again"),
    ]:
        refused = invoke("consortium", "audit", *args)
        assert refused.exit_code == 1 and len(refused.stderr.strip().splitlines()) == 1
        assert error in refused.stderr
    assert len(sim.requests) == before
    assert load_run(parent).audits == []


def test_hostile_answers_never_reach_the_terminal_raw(sim):
    sim.add("m1", reply="\x1b[2J\u202e<answer>42</answer>")
    sim.add("m2", reply="<answer>41</answer>")
    sim.add("judge", reply=arbiter_xml("\x1b]0;owned\x07<answer>42</answer>", 0.9))
    parent = ConsortiumOrchestrator(models=["m1", "m2"], arbiter="judge", observers=[RunRecorder()]
                                    ).orchestrate_sync("6*7?")["metadata"]["run_id"]
    result = invoke("consortium", "audit", parent, "--shuffles", "1")
    assert result.exit_code == 0, result.output
    for text in (result.output, invoke("consortium", "inspect", parent).output):
        assert "\x1b" not in text and "\x07" not in text, text


@pytest.mark.parametrize("n, k", [(2, 3), (3, 5), (4, 30), (8, 4)])
def test_orders_never_repeat_the_original_and_differ_while_they_can(n, k):
    import random

    found = orders(n, k, random.Random(0))
    assert len(found) == k and all(sorted(o) == list(range(n)) and o != list(range(n)) for o in found)
    distinct = len({tuple(o) for o in found})
    assert distinct == min(k, {2: 1, 3: 5, 4: 23}.get(n, k))


def test_wilson_interval():
    assert wilson(0, 0) is None
    low, high = wilson(0, 10)
    assert low == 0.0 and round(high, 3) == 0.278
    low, high = wilson(5, 10)
    assert round(low, 3) == 0.237 and round(high, 3) == 0.763


# Self-preference: an arbiter of a member's family is warned of


def test_saving_an_arbiter_of_a_members_family_warns_in_one_line(sim):
    sim.add_many(["fam-big", "fam-small", "other", "judge"], reply="<answer>42</answer>")
    saved = invoke("consortium", "save", "c", "-m", "fam-small", "-m", "other:2", "--arbiter", "fam-big")
    assert saved.exit_code == 0, saved.output
    assert saved.stderr.strip().splitlines() == [
        "Warning: the arbiter fam-big is of the same family (fam) as fam-small: judges favour their own "
        "family's answers; an arbiter of another family is fairer"]
    fair = invoke("consortium", "save", "d", "-m", "other", "-m", "fam-small", "--arbiter", "judge")
    assert fair.exit_code == 0 and fair.stderr == ""

    sim.add("fam-big", reply=arbiter_xml("<answer>42</answer>", 0.9))
    run_id = ConsortiumOrchestrator(models=["fam-small", "other"], arbiter="fam-big", observers=[RunRecorder()]
                                    ).orchestrate_sync("6*7?")["metadata"]["run_id"]
    shown = invoke("consortium", "inspect", run_id).stdout.splitlines()
    assert sum(line.startswith("Warning: the arbiter fam-big is of the same family (fam)") for line in shown) == 1


def test_families_by_provider_and_name(sim):
    import llm

    from llm_consortium.core.families import family

    assert family(llm.get_model("gpt-4o")) == family(llm.get_model("gpt-4o-mini")) == ("openai", "gpt")
    assert family(llm.get_model("o3")) == ("openai", "o")  # another family of the same provider
    sim.add("gpt-sim", reply="ok")
    assert family(llm.get_model("gpt-sim")) == (sim.base_url, "gpt")  # the same name at another provider


def test_eval_reports_the_self_preference_gap(sim, tmp_path):
    """fam-small is always wrong and its family's arbiter always chooses its answer."""
    from click.testing import CliRunner

    from llm_consortium.faces.eval_command import eval_command

    truth = {"What is 2+2?": "4", "What is 3+3?": "6", "What is 3*3?": "9"}
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in truth.items()))

    def right(request):
        return "<answer>" + next(a for p, a in truth.items() if p in request.user) + "</answer>"

    sim.add("fam-small", reply="<answer>0</answer>")
    sim.add_many(["x1", "x2"], reply=right)
    sim.add("fam-big", reply=arbiter_xml("<answer>0</answer>", 0.9))
    result = CliRunner().invoke(eval_command, [str(path), "-m", "fam-small", "-m", "x1", "-m", "x2", "--arbiter",
                                               "fam-big", "--methods", "arbiter", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (arbiter,) = [row for row in json.loads(result.stdout)["results"] if row["name"] == "arbiter"]
    assert arbiter["self_preference"] == {
        "arbiter": "fam-big", "family": ["fam-small"], "items": 3, "chose_family": 3, "family_right": 0,
        "choice_rate": 1.0, "right_rate": 0.0, "gap": 1.0}
    text = CliRunner().invoke(eval_command, [str(path), "-m", "fam-small", "-m", "x1", "-m", "x2", "--arbiter",
                                             "fam-big", "--methods", "arbiter"], catch_exceptions=False).stdout
    assert ("arbiter, arbiter fam-big (family of fam-small): on 3 items where its family's answer differed, chose it "
            "on 3 (100 %); it was right on 0 (0 %): gap +100.0 points") in text


def test_with_llm_logs_off_the_audit_is_printed_not_recorded(sim):
    parent = past_run(sim, first_shown)
    assert invoke("logs", "off").exit_code == 0
    result = invoke("consortium", "audit", parent, "--shuffles", "1")
    assert result.exit_code == 0, result.output
    assert "Judge audit (1 order, arbiter" in result.stdout and "Not recorded: llm logs are off." in result.stderr
    assert load_run(parent).audits == []
