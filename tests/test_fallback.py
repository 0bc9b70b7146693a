"""When no judge can be read, the members' own agreement decides
(``judging.members_verdict``), for every method: an answer only with a
strict majority of the panel, as a member wrote it without its tags, and
otherwise no answer at all, with every distinct answer and who gave it.
Through llm's real client against the simulated provider."""

import json

import pytest

from helpers import invoke
from llm_consortium import ConsortiumOrchestrator

FAST = {"retry_backoff": 0.01, "attempts": 1}
PROSE = "I have thought about it at length, but I will not use the format."
LONDON_OR_PARIS = ["The capital is London.", "I think it is Paris.", "Paris is the capital of France."]


def run(sim, answers, judge, **kw):
    for i, answer in enumerate(answers, 1):
        sim.add(f"m{i}", **({"reply": answer} if isinstance(answer, str) else answer))
    sim.add("judge", **judge)
    models = [f"m{i}" for i in range(1, len(answers) + 1)]
    return ConsortiumOrchestrator(models=models, arbiter="judge", **{**FAST, **kw}).orchestrate_sync("Capital?")


def cli(answers, *extra):
    return invoke("consortium", "Capital of France?", *[a for i in range(1, len(answers) + 1) for a in ("-m", f"m{i}")],
                  "--arbiter", "judge", "--no-raw", "--attempts", "1", *extra)


def grouping(request) -> bool:
    """Whether ``request`` is the fallback's question of which answers agree."""
    return "<groups>" in request.user and "<synthesis>" not in request.user


def test_three_groups_of_one_are_no_answer_not_the_first_member(sim):
    for i, answer in enumerate(LONDON_OR_PARIS, 1):
        sim.add(f"m{i}", reply=answer)
    sim.add("judge", reply=PROSE)
    result = cli(LONDON_OR_PARIS, "--max-iterations", "1", "--json")
    synthesis = json.loads(result.stdout)["synthesis"]
    assert synthesis["synthesis"] == "" and synthesis["no_verdict"] is True
    assert synthesis["fallback"] == "the arbiter's reply could not be read, even after a reminder of the format"
    assert synthesis["candidates"] == [{"answer": answer, "members": [f"m{i}#1"]}
                                       for i, answer in enumerate(LONDON_OR_PARIS, 1)]
    # asked twice for a verdict, then once only which answers agree (they are phrases)
    calls = sim.calls("judge")
    assert len(calls) == 3 and grouping(calls[2]) and not grouping(calls[0])
    assert all(f"Response {c}" in calls[2].user for c in "ABC") and "m1" not in calls[2].user
    assert "London" not in cli(LONDON_OR_PARIS, "--max-iterations", "1").stdout


def test_the_grouping_call_can_find_the_majority(sim):
    groups = "<groups>\nResponse B, Response C\nResponse A\n</groups>"
    result = run(sim, LONDON_OR_PARIS, {"reply": lambda r: groups if grouping(r) else PROSE}, max_iterations=1)
    synthesis = result["synthesis"]
    assert synthesis["synthesis"] == "I think it is Paris." and synthesis["no_verdict"] is False
    assert synthesis["confidence"] == synthesis["agreement"] == pytest.approx(2 / 3)
    assert synthesis["details"]["agreement"]["source"] == "arbiter"  # the groups that decided, shown
    assert "could not be read" in synthesis["fallback"]


def test_the_answer_is_printed_without_its_tags(sim):
    answers = ["<answer>Paris</answer>", "Surely <answer>Paris</answer>", "<answer>Lyon</answer>"]
    for i, answer in enumerate(answers, 1):
        sim.add(f"m{i}", reply=answer)
    sim.add("judge", status=500, error_message="down")
    result = cli(answers)
    assert result.stdout == "Paris\n"


def test_a_minority_of_the_panel_is_no_answer(sim):
    # 2 of 5 alike, 3 failed: 1.00 of the answers, but not a majority of the panel
    failed = {"status": 500, "error_message": "down"}
    result = run(sim, ["Paris", "Paris", failed, failed, failed], failed)
    synthesis = result["synthesis"]
    assert synthesis["no_verdict"] is True and synthesis["synthesis"] == ""
    assert synthesis["candidates"] == [{"answer": "Paris", "members": ["m1#1", "m2#1"]}]
    assert synthesis["fallback"].startswith("the arbiter failed")
    assert "2 of 5" in synthesis["analysis"] or "at most 2" in synthesis["analysis"]


def test_members_a_quorum_cancelled_are_not_counted(sim):
    result = run(sim, ["Paris", "Paris", {"reply": "Lyon", "latency": 30}], {"status": 500, "error_message": "down"},
                 quorum=2)
    synthesis = result["synthesis"]
    assert synthesis["synthesis"] == "Paris" and synthesis["confidence"] == 1.0  # 2 of the 2 counted


def test_a_fallback_under_a_schema_never_picks_an_invalid_answer(sim):
    schema = '{"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]}'
    answers = ['{"age": -5}', '{"age": -5}', '{"age": 30}']
    for i, answer in enumerate(answers, 1):
        sim.add(f"m{i}", reply=answer)
    sim.add("judge", reply=PROSE)
    result = cli(answers, "--schema", schema, "--max-iterations", "1", "--json")
    synthesis = json.loads(result.stdout)["synthesis"]
    # the invalid answer has the most members, the valid one is 1 of 3: no answer
    assert synthesis["no_verdict"] is True and synthesis["synthesis"] == ""
    assert synthesis["candidates"] == [{"answer": '{"age": -5}', "members": ["m1#1", "m2#1"]},
                                       {"answer": '{"age": 30}', "members": ["m3#1"]}]
    assert not any(grouping(r) for r in sim.calls("judge"))  # JSON values compare exactly
