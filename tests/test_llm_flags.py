"""llm's prompt flags on a consortium (issue 10): --schema and -a, through
llm's real CLI and OpenAI client against the simulated provider."""

import json
import re

import pytest

from llm_consortium.evaluation.simulator import arbiter_xml
from helpers import db_rows, invoke

PERSON = '{"name": "Ann", "age": 30}'
SCHEMA_DSL = "name, age int"


def quoting_judge(synthesis):
    """An arbiter whose synthesis is ``synthesis`` (a str, or a list used in turn)."""
    replies = [synthesis] if isinstance(synthesis, str) else list(synthesis)
    return [arbiter_xml(reply, 0.9) for reply in replies]


@pytest.fixture
def people(sim):
    sim.add("native", reply=PERSON, supports_schema=True)
    sim.add("plain", reply=f"```json\n{PERSON}\n```")
    sim.add("judge", reply=quoting_judge('{"age": 30, "name": "Ann"}'))
    assert invoke("consortium", "save", "c", "-m", "native", "-m", "plain", "--arbiter", "judge").exit_code == 0
    return sim


@pytest.mark.parametrize("command", [["-m", "c"], ["consortium", "run", "-m", "native", "-m", "plain",
                                                   "--arbiter", "judge"]])
def test_schema_members_answer_in_it_and_the_answer_validates(people, command):
    result = invoke(*command, "Who?", "--schema", SCHEMA_DSL, *(["--no-raw"] if "run" in command else []))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ann", "age": 30}
    native, plain, judge = people.calls("native")[0], people.calls("plain")[0], people.calls("judge")[0]
    # A model that enforces schemas gets it natively; the other is told in the prompt.
    assert native.body["response_format"]["type"] == "json_schema"
    assert "response_format" not in plain.body and "valid against this JSON schema" in plain.user
    assert '"required": ["name", "age"]' in judge.user


def test_schema_answer_that_does_not_validate_gets_one_reminder(people):
    people.add("judge", reply=quoting_judge(['{"name": "Ann"}', PERSON]))
    result = invoke("-m", "c", "Who?", "--schema", SCHEMA_DSL)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ann", "age": 30}
    second = people.calls("judge")[1].user
    assert "could not be used because its synthesis must be only a JSON value" in second
    assert "'age' is a required property" in second


def test_schema_answer_still_invalid_is_a_clear_error(people):
    people.add("judge", reply=quoting_judge("Ann, thirty"))
    result = invoke("consortium", "run", "Who?", "-m", "native", "--arbiter", "judge", "--schema", SCHEMA_DSL,
                    "--no-raw")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Error: The arbiter's answer does not match the schema: not JSON")
    assert len(people.calls("judge")) == 2
    assert db_rows("SELECT status FROM consortium_runs")[0]["status"] == "failed"


def test_schema_vote_compares_answers_as_json_values(sim):
    sim.add("a", reply='{"name": "Ann", "age": 30}')
    sim.add("b", reply='```json\n{"age": 30,\n "name": "Ann"}\n```')
    sim.add("c", reply='{"name": "Bob", "age": 40}')
    sim.add("judge", reply=arbiter_xml("unused", 0.9))
    result = invoke("consortium", "run", "Who?", "-m", "a", "-m", "b", "-m", "c", "--arbiter", "judge",
                    "--method", "vote", "--confidence-threshold", "0.6", "--schema", SCHEMA_DSL, "--json")
    assert result.exit_code == 0, result.stderr
    synthesis = json.loads(result.stdout)["synthesis"]
    assert json.loads(synthesis["synthesis"]) == {"name": "Ann", "age": 30}
    assert [(row["answer"], row["members"]) for row in synthesis["details"]["tally"]] == [
        ('{"name": "Ann", "age": 30}', ["a#1", "b#1"]), ('{"name": "Bob", "age": 40}', ["c#1"])]
    assert sim.calls("judge") == []
    assert "<answer>" not in sim.calls("a")[0].system  # the JSON is the answer


def test_a_bad_schema_is_one_line_before_any_call(people):
    result = invoke("consortium", "run", "Who?", "-m", "native", "--arbiter", "judge", "--schema", "no-such-id")
    assert result.exit_code == 1 and result.stderr.startswith("Error: --schema:")
    assert not people.requests


# Attachments


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "pixel.png"
    path.write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cf"
        "c0f01f0005000201c7a1c6e70000000049454e44ae426082"
    ))
    return path


def image_parts(request):
    return [part for message in request.messages if isinstance(message.get("content"), list)
            for part in message["content"] if part.get("type") == "image_url"]


@pytest.mark.parametrize("via_run", [False, True])
def test_attachment_goes_to_members_that_read_it_and_the_others_are_told(sim, image, via_run):
    sim.add("sees", reply="A single pixel.", vision=True)
    sim.add("blind", reply="I cannot see it.")
    sim.add("judge", reply=arbiter_xml("A one-pixel image.", 0.9), vision=True)
    if via_run:
        result = invoke("consortium", "run", "Describe it", "-a", str(image), "-m", "sees", "-m", "blind",
                        "--arbiter", "judge", "--no-raw")
    else:
        invoke("consortium", "save", "v", "-m", "sees", "-m", "blind", "--arbiter", "judge")
        result = invoke("-m", "v", "Describe it", "-a", str(image))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "A one-pixel image.\n"
    assert len(image_parts(sim.calls("sees")[0])) == 1
    assert image_parts(sim.calls("blind")[0]) == []
    assert "An attachment was left out" in sim.calls("blind")[0].user and "image/png" in sim.calls("blind")[0].user
    assert len(image_parts(sim.calls("judge")[0])) == 1  # the arbiter reads images too
    recorded = {r["model"]: r["prompt"] for r in db_rows("SELECT model, prompt FROM consortium_calls WHERE role = 'member'")}
    assert "left out" in recorded["blind"] and "left out" not in recorded["sees"]


def test_attachment_nobody_can_read_is_refused_before_any_call(sim, image):
    sim.add("blind", reply="x")
    sim.add("judge", reply=arbiter_xml())
    result = invoke("consortium", "run", "Describe it", "-a", str(image), "-m", "blind", "--arbiter", "judge")
    assert result.exit_code == 1
    assert re.search(r"does not support attachments", result.stderr)
    assert not sim.requests


# Fragments


def test_fragments_on_consortium_run_and_llm_m(sim, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting moved to Tuesday.")
    style = tmp_path / "style.txt"
    style.write_text("Answer in one sentence.")
    sim.add("m1", reply="Tuesday.")
    sim.add("judge", reply=arbiter_xml("It is on Tuesday.", 0.9))
    result = invoke("consortium", "run", "When is the meeting?", "-f", str(notes), "--sf", str(style),
                    "-m", "m1", "--arbiter", "judge", "--no-raw")
    assert result.exit_code == 0, result.stderr
    member = sim.calls("m1")[0]
    assert member.user == "The meeting moved to Tuesday.\nWhen is the meeting?"
    assert "Answer in one sentence." in member.system
    alone = invoke("consortium", "run", "-f", str(notes), "-m", "m1", "--arbiter", "judge", "--no-raw")
    assert alone.exit_code == 0 and sim.calls("m1")[-1].user == "The meeting moved to Tuesday."
    missing = invoke("consortium", "run", "q", "-f", "no-such-fragment", "-m", "m1", "--arbiter", "judge")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: Fragment not found")
    assert invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    assert invoke("-m", "c", "When?", "-f", str(notes)).exit_code == 0  # llm -f reaches the members too
    assert sim.calls("m1")[-1].user == "The meeting moved to Tuesday.\nWhen?"


# Continuing a conversation from llm consortium run


def test_run_continues_a_conversation_with_c_and_cid(sim):
    sim.add("m1", reply="Member answer.")
    sim.add("judge", reply=arbiter_xml("The answer is 42.", 0.9))
    assert invoke("consortium", "run", "First question", "-m", "m1", "--arbiter", "judge", "--no-raw").exit_code == 0
    follow = invoke("consortium", "run", "-c", "Follow-up", "-m", "m1", "--arbiter", "judge", "--no-raw")
    assert follow.exit_code == 0, follow.stderr
    contents = [(m["role"], m["content"]) for m in sim.calls("m1")[-1].messages]
    assert ("user", "First question") in contents and ("assistant", "The answer is 42.") in contents
    assert contents[-1] == ("user", "Follow-up")
    logged = json.loads(invoke("logs", "--json", "-n", "0").stdout)
    assert len({entry["conversation_id"] for entry in logged}) == 1  # the same conversation, continued
    cid = logged[0]["conversation_id"]
    again = invoke("consortium", "run", "--cid", cid, "Third", "-m", "m1", "--arbiter", "judge", "--no-raw")
    assert again.exit_code == 0 and ("user", "Follow-up") in [
        (m["role"], m["content"]) for m in sim.calls("m1")[-1].messages]
    missing = invoke("consortium", "run", "--cid", "nope", "q", "-m", "m1", "--arbiter", "judge")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: Cannot continue the conversation")


def test_run_with_an_llm_template(sim):
    import llm

    templates = llm.user_dir() / "templates"
    templates.mkdir()
    (templates / "terse.yaml").write_text(
        "prompt: 'Summarise in $words words: $input'\nsystem: Be terse.\noptions:\n  temperature: 0.1\n"
    )
    sim.add("m1", reply="Short.")
    sim.add("judge", reply=arbiter_xml("Short.", 0.9))
    result = invoke("consortium", "run", "a long text", "-t", "terse", "-p", "words", "5",
                    "-m", "m1", "--arbiter", "judge", "--no-raw")
    assert result.exit_code == 0, result.stderr
    member = sim.calls("m1")[0]
    assert member.user == "Summarise in 5 words: a long text"
    assert "Be terse." in member.system and member.body["temperature"] == 0.1
    missing = invoke("consortium", "run", "x", "-t", "terse", "-m", "m1", "--arbiter", "judge")
    assert missing.exit_code == 1 and "words" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    unknown = invoke("consortium", "run", "x", "-t", "nope", "-m", "m1", "--arbiter", "judge")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("Error: Invalid template: nope")
