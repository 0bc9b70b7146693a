"""``llm consortium rejudge``: a past run's member answers judged again,
recorded as a new run linked to it, through llm's real client."""

import json


from helpers import invoke
from llm_consortium import ConsortiumOrchestrator, RunRecorder
from llm_consortium.storage.store import get_run
from llm_consortium.evaluation.simulator import arbiter_xml


def past_run(sim):
    """A recorded arbiter run of three members (two say 42), judged by 'judge'."""
    sim.add("m1", reply="Six sevens. <answer>42</answer>")
    sim.add("m2", reply="<answer>42</answer>")
    sim.add("m3", reply="<answer>41</answer>")
    sim.add("judge", reply=arbiter_xml("<answer>42</answer>", 0.9))
    sim.add("judge-2", reply=arbiter_xml("<answer>41</answer>", 0.6, analysis="Second opinion."))
    consortium_ = ConsortiumOrchestrator(models=["m1", "m2", "m3"], arbiter="judge", observers=[RunRecorder()])
    return consortium_.orchestrate_sync("What is 6*7?")["metadata"]["run_id"]


def test_rejudge_with_another_arbiter_calls_only_it_and_records_a_linked_run(sim):
    parent = past_run(sim)
    before = len(sim.requests)
    result = invoke("consortium", "rejudge", parent[:8], "--arbiter", "judge-2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "<answer>41</answer>"
    assert [r.model for r in sim.requests[before:]] == ["judge-2"]  # the members were not asked again
    prompt = sim.requests[-1].user
    assert "Six sevens." in prompt and "What is 6*7?" in prompt  # it judged the stored answers

    child_id = result.stderr.strip().splitlines()[-1].split()[3].rstrip(",")
    child = get_run(child_id)
    assert child["parent_run_id"] == parent and child["status"] == "below_threshold"  # judge-2: 0.6
    assert child["config"]["arbiter"] == "judge-2" and child["synthesis"] == "<answer>41</answer>"
    members = [c for c in child["rounds"][0]["calls"] if c["role"] == "member"]
    assert [(c["model"], c["text"], c["attempts"], c["input_tokens"]) for c in members] == [
        ("m1", "Six sevens. <answer>42</answer>", 0, 0), ("m2", "<answer>42</answer>", 0, 0),
        ("m3", "<answer>41</answer>", 0, 0)]
    assert [c["model"] for c in child["rounds"][0]["calls"] if c["role"] != "member"] == ["judge-2"]
    assert get_run(parent)["rejudged_as"] == [child_id]

    shown = invoke("consortium", "inspect", child_id).stdout
    assert f"Rejudged from run {parent}" in shown
    assert f"Rejudged as run {child_id}" in invoke("consortium", "inspect", parent).stdout


def test_rejudge_as_a_council_asks_the_members_only_as_reviewers(sim):
    parent = past_run(sim)
    before = len(sim.requests)
    sim.add_many(["m1", "m2", "m3"], reply="FINAL RANKING:\n1. Response A\n2. Response B")
    result = invoke("consortium", "rejudge", parent, "--method", "council", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["metadata"]["method"] == "council" and data["metadata"]["parent_run_id"] == parent
    new = sim.requests[before:]
    assert all("FINAL RANKING" in r.user for r in new if r.model != "judge")  # reviews, not answers
    assert sorted(r.model for r in new) == ["judge", "m1", "m2", "m3"]
    assert len(data["synthesis"]["details"]["ballots"]) == 3


def test_rejudge_as_a_vote_shows_every_answer_as_written_and_who_gave_it(sim):
    from llm_consortium.evaluation.simulator import DEMO_MEMBERS

    for name, answer in DEMO_MEMBERS.items():
        sim.add(name, reply=answer)
    sim.add("judge", reply=arbiter_xml("Three.", 0.8))
    consortium_ = ConsortiumOrchestrator(models=list(DEMO_MEMBERS), arbiter="judge", observers=[RunRecorder()])
    parent = consortium_.orchestrate_sync("How many r's are in strawberry?")["metadata"]["run_id"]
    result = invoke("consortium", "rejudge", parent, "--method", "vote")
    assert result.exit_code == 0, result.output
    (vote,) = [line for line in result.stderr.splitlines() if line.startswith("Vote:")]
    assert "I count three: st-r-awbe-r-r-y. ×1 (demo-c#1)" in vote  # not "i count three st r awbe r r y"
    assert "There are three r's in strawberry. ×1 (demo-a#1)" in vote
    # the member with no short answer is listed too, with its reply
    assert "Strawberry has 3 r's: one in 'str' and two in 'berry'. ×1 (demo-b#1; no short answer)" in vote


def test_unknown_run_id_is_one_line_and_no_call(sim):
    past_run(sim)
    before = len(sim.requests)
    result = invoke("consortium", "rejudge", "nosuchrun", "--method", "council")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: No run matches 'nosuchrun' (see 'llm consortium runs')"]
    unknown_arbiter = invoke("consortium", "rejudge", get_run_id(), "--arbiter", "no-such-model")
    assert unknown_arbiter.exit_code == 1 and len(unknown_arbiter.stderr.strip().splitlines()) == 1
    assert "no-such-model" in unknown_arbiter.stderr
    assert len(sim.requests) == before


def get_run_id():
    from llm_consortium.storage.store import latest_run_id

    return latest_run_id()


def test_rejudge_keeps_the_panel_whole_and_says_when_there_is_no_answer(sim):
    """A member that failed in round 1 was not asked again in round 2, so no
    call of it was recorded there: the rejudge read "2 of 2 answered" and could
    call a partial panel a success. A rejudge with no answer exited 0."""
    sim.add("m1", reply="It is Paris.")
    sim.add("m2", reply="I say London.")
    sim.add("down", status=401, error_message="bad key")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.5))
    sim.add("mute", reply="I will not use the format.")
    orchestrator = ConsortiumOrchestrator(models=["m1", "m2", "down"], arbiter="judge", max_iterations=2,
                                          retry_backoff=0.01, observers=[RunRecorder()])
    parent = orchestrator.orchestrate_sync("Capital of France?")["metadata"]["run_id"]
    result = invoke("consortium", "rejudge", parent[:8], "--json")
    meta = json.loads(result.stdout)["metadata"]
    assert (meta["members"], meta["answered"]) == (3, 2) and meta["status"] == "partial"
    no_answer = invoke("consortium", "rejudge", parent[:8], "--arbiter", "mute")
    assert no_answer.exit_code == 1 and no_answer.stdout == ""
    assert "No verdict" in no_answer.stderr
