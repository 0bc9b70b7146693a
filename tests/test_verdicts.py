"""A verdict must be a verdict (issue 19): an arbiter reply that echoes the
judge prompts' own text, is cut off or is empty is no verdict, and is asked
for again with a reminder, then left to the members' agreement. End to end
through llm's real client against the simulated provider."""

import time

import pytest

from llm_consortium import ConsortiumOrchestrator
from llm_consortium.core.parsing import MAX_REPLY_CHARS, parse_arbiter
from llm_consortium.core.prompts import ECHO, UNCLOSED, compact_arbiter_prompt, reminder, template
from llm_consortium.evaluation.simulator import arbiter_xml

FAST = {"retry_backoff": 0.01}
MEMBERS = ["m1", "m2", "m3"]


def orchestrator(method: str = "arbiter", **kw):
    return ConsortiumOrchestrator(models=MEMBERS, arbiter="judge", method=method, max_iterations=1,
                                  **{**FAST, **kw})


def echo_the_reminder(request):
    """A small judge that first ignores the format, then, reminded of it,
    copies the reminder's first sentence back, as one did on a real server."""
    _, rule, reminded = request.user.rpartition("---\n")
    if not rule:
        return "I think the answer is Paris."
    return reminded.split(". ")[0] + "."


def test_an_arbiter_echoing_the_reminder_gives_no_verdict(sim):
    sim.add_many(MEMBERS, reply="Paris.")
    sim.add("judge", reply=echo_the_reminder)
    synthesis = orchestrator().orchestrate_sync("Capital of France?")["synthesis"]
    assert synthesis["synthesis"] != "block."
    assert synthesis["parse_ok"] is False and synthesis["fallback"]
    assert len(sim.calls("judge")) == 2


def test_an_echo_is_asked_for_again_saying_why(sim):
    echo = "Your previous reply to this could not be used because it had no <synthesis> block.</synthesis>"
    sim.add_many(MEMBERS, reply="Paris.")
    sim.add("judge", reply=[echo, arbiter_xml("Paris.", 0.9)])
    synthesis = orchestrator().orchestrate_sync("Capital of France?")["synthesis"]
    assert synthesis["synthesis"] == "Paris." and synthesis["parse_ok"] and synthesis["fallback"] is None
    first, second = sim.calls("judge")
    assert second.user == first.user + reminder(ECHO)


def council_member(request):
    """Answers "Paris."; as a reviewer, ranks the responses in the order shown."""
    if "FINAL RANKING" not in request.user:
        return "Paris."
    return "FINAL RANKING:\n1. Response A\n2. Response B"


def test_a_council_chair_echoing_its_prompt_gives_no_verdict(sim):
    sim.add_many(MEMBERS, reply=council_member)
    sim.add("judge", reply=lambda request: f"<confidence>0.9</confidence>\n<synthesis>{request.user}</synthesis>")
    synthesis = orchestrator("council").orchestrate_sync("Capital of France?")["synthesis"]
    assert "# Peer review" not in synthesis["synthesis"] and "arbiter" not in synthesis["synthesis"]
    assert synthesis["parse_ok"] is False and synthesis["fallback"]
    assert len(sim.calls("judge")) == 2


@pytest.mark.parametrize("method", ["arbiter", "vote"])
def test_a_cut_off_verdict_is_asked_for_again(sim, method):
    sim.add("m1", reply="Paris.")
    sim.add("m2", reply="Lyon.")
    sim.add("m3", reply="Marseille.")
    cut = arbiter_xml("The capital of France is Paris, a city on the").removesuffix("</synthesis>")
    sim.add("judge", reply=[cut, arbiter_xml("Paris.", 0.8)])
    synthesis = orchestrator(method).orchestrate_sync("Capital of France?")["synthesis"]
    assert synthesis["synthesis"] == "Paris." and synthesis["parse_ok"]
    assert reminder(UNCLOSED) in sim.calls("judge")[1].user


# A phrase of the arbiter's own prompt, in the question and a member's answer.
INSTRUCTION = "a longer answer is not a better one"


def test_a_verdict_may_quote_the_question_and_the_answers(sim):
    assert INSTRUCTION in template("arbiter").template.lower()
    question = f"My teacher says {INSTRUCTION}. Is that so, for an essay that must cover five topics?"
    answer = f"Mostly: {INSTRUCTION} when both are correct, but an essay that leaves out a topic is incomplete."
    verdict = f'You asked: "{question}" One answer put it well: "{answer}"'
    sim.add_many(MEMBERS, reply=answer)
    sim.add("judge", reply=arbiter_xml(verdict, 0.9))
    synthesis = orchestrator().orchestrate_sync(question)["synthesis"]
    assert synthesis["synthesis"] == verdict and synthesis["parse_ok"]
    assert len(sim.calls("judge")) == 1
    # Quoting nobody, the same words are the prompt's.
    assert parse_arbiter(arbiter_xml(INSTRUCTION.capitalize() + ".")).notes == [ECHO]


def test_the_compact_prompt_and_the_reminder_ask_for_groups():
    compact = compact_arbiter_prompt("q", [("Response A", "Paris."), ("Response B", "Lyon.")], "FENCE-x")
    for prompt in (compact, reminder(ECHO)):
        assert "<groups>" in prompt and "one line per group of responses that give the same answer" in prompt
    assert "BEGIN Response A>>>" in compact and "END Response B>>>" in compact


def test_a_small_judge_asked_in_compact_form_measures_agreement(sim):
    sim.add("m1", reply="Paris is the capital of France.")
    sim.add("m2", reply="The capital is Paris.")
    sim.add("m3", reply="It is Lyon.")

    def small_context(request):
        if len(request.user) > 1000:
            raise ValueError("Requested tokens (1200) exceed context window of 512")
        assert "<groups>" in request.user
        return arbiter_xml("Paris.", 0.8, groups=[["Response A", "Response B"], ["Response C"]])

    sim.add("judge", reply=small_context)
    synthesis = orchestrator().orchestrate_sync("Capital of France?")["synthesis"]
    assert synthesis["synthesis"] == "Paris." and synthesis["fallback"] is None
    assert len(sim.calls("judge")) == 2  # the full prompt, then the compact one
    agreement = synthesis["details"]["agreement"]
    assert agreement["source"] == "arbiter" and synthesis["agreement"] == pytest.approx(2 / 3)


def test_a_reply_over_the_limit_is_cut_with_a_note(sim):
    sim.add_many(MEMBERS, reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9) + "\n" + "And more. " * (MAX_REPLY_CHARS // 10))
    synthesis = orchestrator().orchestrate_sync("Capital of France?")["synthesis"]
    assert synthesis["synthesis"] == "Paris." and synthesis["parse_ok"]
    (note,) = synthesis["notes"]
    assert "cut to its first 1,000,000" in note and "1,000,0" in note.split("(")[1]


@pytest.mark.parametrize("pattern", ["<think>a</think>", "<synthesis ", "<refinement_areas><area>",
                                     "```\n \t" + " \t" * 20 + "x"])
def test_reading_a_hostile_megabyte_takes_linear_time(pattern):
    text = pattern * (MAX_REPLY_CHARS // len(pattern))
    started = time.perf_counter()
    parse_arbiter(f"<synthesis>{text}</synthesis>")
    parse_arbiter(text)
    assert time.perf_counter() - started < 5  # minutes before; under a second each on 2 cores
