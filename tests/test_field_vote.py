"""Per-field consensus: with --method vote and an object --schema, each
top-level field is voted on separately among the members' valid objects,
and the arbiter settles only the disputed fields; the result always
validates. Through llm's real CLI against the simulated provider."""

import json
import re

from helpers import invoke
from llm_consortium.evaluation.simulator import arbiter_xml

PERSON = json.dumps({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                                      "city": {"type": "string"}}, "required": ["name", "age"]})
# A unit and a distance that must agree: a distance in miles is at most 10.
TRIP = json.dumps({"type": "object", "properties": {"unit": {"enum": ["km", "mi"]}, "distance": {"type": "number"}},
                   "required": ["unit", "distance"],
                   "if": {"properties": {"unit": {"const": "mi"}}},
                   "then": {"properties": {"distance": {"maximum": 10}}}})


def vote(sim, answers, judge, schema=PERSON, threshold="0.6", *extra):
    names = [f"f{i}" for i in range(len(answers))]
    for name, answer in zip(names, answers):
        sim.add(name, reply=json.dumps(answer) if isinstance(answer, dict) else answer)
    sim.add("judge", reply=judge)
    members = [arg for name in names for arg in ("-m", name)]
    return invoke("consortium", "Who?", *members, "--arbiter", "judge", "--method", "vote",
                  "--confidence-threshold", threshold, "--schema", schema, "--no-raw", *extra)


def test_each_field_is_voted_separately_and_no_judge_is_asked_when_each_has_a_majority(sim):
    """1-1-1 as whole objects (the old vote would have asked the arbiter), but
    each field has 2 of 3: the answer is the fields' winners, which no one member gave."""
    answers = [{"name": "Ann", "age": 30, "city": "Lyon"}, {"name": "Ann", "age": 31, "city": "Paris"},
               {"name": "Bob", "age": 30, "city": "Paris"}]
    result = vote(sim, answers, arbiter_xml("unused", 0.9), PERSON, "0.6", "--json")
    assert result.exit_code == 0, result.stderr
    synthesis = json.loads(result.stdout)["synthesis"]
    assert json.loads(synthesis["synthesis"]) == {"name": "Ann", "age": 30, "city": "Paris"}
    assert sim.calls("judge") == []
    fields = {f["field"]: f for f in synthesis["details"]["fields"]}
    assert [(name, f["value"], f["count"], f["settled_by"]) for name, f in fields.items()] == [
        ("name", '"Ann"', 2, "vote"), ("age", "30", 2, "vote"), ("city", '"Paris"', 2, "vote")]
    assert fields["age"]["tally"] == [{"answer": "30", "count": 2, "members": ["f0#1", "f2#1"], "note": None},
                                      {"answer": "31", "count": 1, "members": ["f1#1"], "note": None}]
    assert synthesis["confidence"] == round(2 / 3, 4) or abs(synthesis["confidence"] - 2 / 3) < 1e-6

    shown = invoke("consortium", "inspect", "latest").stdout
    assert 'Field age: 2 of 3 agree, decided by the vote: 30 ×2 (f0#1, f2#1); 31 ×1 (f1#1)' in shown


def test_the_arbiter_settles_only_the_disputed_fields(sim):
    answers = [{"name": "Ann", "age": 30}, {"name": "Ann", "age": 31}, {"name": "Ann", "age": 32}]
    # The arbiter also rewrites the name: only its age is taken.
    result = vote(sim, answers, arbiter_xml('{"name": "Zed", "age": 31}', 0.7), PERSON, "0.6", "--json")
    assert result.exit_code == 0, result.stderr
    synthesis = json.loads(result.stdout)["synthesis"]
    assert json.loads(synthesis["synthesis"]) == {"name": "Ann", "age": 31}
    (request,) = sim.calls("judge")
    assert "Decided by the vote: name\nDisputed: fields the vote did not decide: age: tied" in request.user
    assert "age (disputed): 30: 1 (Response A); 31: 1 (Response B); 32: 1 (Response C)" in request.user
    details = synthesis["details"]
    assert details["fallback_reason"] == "fields the vote did not decide: age: tied, 1 of 3 each"
    assert [(f["field"], f["settled_by"]) for f in details["fields"]] == [("name", "vote"), ("age", "arbiter")]
    assert synthesis["confidence"] == 0.7  # the least sure field: the arbiter's


def test_an_arbiter_that_fails_settles_no_field_and_no_round_follows(sim):
    answers = [{"name": "Ann", "age": 30}, {"name": "Ann", "age": 31}, {"name": "Ann", "age": 30}]
    for i, answer in enumerate(answers):
        sim.add(f"f{i}", reply=json.dumps(answer))
    sim.add("judge", status=500, error_message="judge down")
    result = invoke("consortium", "Who?", "-m", "f0", "-m", "f1", "-m", "f2", "--arbiter", "judge", "--method",
                    "vote", "--confidence-threshold", "0.9", "--schema", PERSON, "--no-raw", "--json",
                    "--attempts", "1")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    fields = {f["field"]: f["settled_by"] for f in data["synthesis"]["details"]["fields"]}
    assert fields == {"name": "vote", "age": "plurality"}  # not "arbiter": it never answered
    assert json.loads(data["synthesis"]["synthesis"]) == {"name": "Ann", "age": 30}
    assert data["metadata"]["iteration_count"] == 1 and len(sim.calls("f0")) == 1
    assert data["metadata"]["status"] == "degraded"
    assert "settled by the arbiter" not in invoke("consortium", "inspect", "latest").stdout


def test_fields_that_do_not_validate_together_ask_the_arbiter_once_for_the_whole_object(sim):
    """Every answer is valid, and each field's winner too, but "mi" with 16 is not."""
    answers = [{"unit": "km", "distance": 16}, {"unit": "km", "distance": 16}, {"unit": "mi", "distance": 10},
               {"unit": "mi", "distance": 9}, {"unit": "mi", "distance": 8}]
    result = vote(sim, answers, arbiter_xml('{"unit": "km", "distance": 16.1}', 0.8), TRIP, "0.4", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert json.loads(data["synthesis"]["synthesis"]) == {"unit": "km", "distance": 16.1}
    assert len(sim.calls("judge")) == 1
    assert "together they are not valid against the schema" in sim.calls("judge")[0].user
    assert any("the arbiter wrote the whole object" in note for note in data["metadata"]["notes"])


def test_when_the_arbiters_object_fails_too_the_largest_valid_group_wins_and_the_run_says_so(sim):
    answers = [{"unit": "km", "distance": 16}, {"unit": "km", "distance": 16}, {"unit": "mi", "distance": 10},
               {"unit": "mi", "distance": 9}, {"unit": "mi", "distance": 8}]
    result = vote(sim, answers, arbiter_xml('{"unit": "mi", "distance": 16}', 0.8), TRIP, "0.4")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"unit": "km", "distance": 16}
    assert len(sim.calls("judge")) == 1  # asked once: no reminder
    assert re.search(r"nor was the arbiter's object: the largest group of identical valid answers wins \(2 of 5\)",
                     result.stderr)
    assert "the largest group of identical valid answers wins" in invoke("consortium", "inspect", "latest").stdout


def test_a_field_name_from_a_member_is_shown_safely(sim):
    free = json.dumps({"type": "object"})
    key = "\x1b[31mred" + "x" * 200
    answers = [{key: 1}, {key: 1}, {key: 2}]
    result = vote(sim, answers, arbiter_xml("unused", 0.9), free, "0.6")
    assert result.exit_code == 0, result.stderr
    shown = invoke("consortium", "inspect", "latest").stdout
    assert "\x1b" not in shown and "\x1b" not in result.stderr
    (line,) = [line for line in shown.splitlines() if line.startswith("Field ")]
    assert "Field red" + "x" * 40 in line and "x" * 100 not in line.split(":")[0]


# Structured items in an eval: a line with a schema and an object answer, scored field by field

ITEMS = [("Who is the first person?", {"name": "Ann", "age": 30}), ("Who is the second?", {"name": "Bob", "age": 40})]


def structured_dataset(tmp_path):
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": a, "schema": json.loads(PERSON)}) + "\n"
                            for p, a in ITEMS))
    return path


def person(wrong: str | None):
    """A member that gets ``wrong`` ("name", "age" or None) wrong on every item."""
    def reply(request):
        answer = dict(next(a for p, a in ITEMS if p in request.user))
        if wrong == "name":
            answer["name"] = "Zed"
        elif wrong == "age":
            answer["age"] += 1
        return json.dumps(answer)
    return reply


def test_a_structured_eval_scores_each_field(sim, tmp_path):
    from click.testing import CliRunner

    from llm_consortium.faces.eval_command import eval_command

    sim.add("right", reply=person(None))
    sim.add("bad-name", reply=person("name"))
    sim.add("bad-age", reply=person("age"))
    sim.add("judge", reply=arbiter_xml("unused", 0.9))
    saved = invoke("consortium", "save", "people", "-m", "right", "-m", "bad-name", "-m", "bad-age", "--arbiter",
                   "judge", "--confidence-threshold", "0.6")
    assert saved.exit_code == 0, saved.output
    args = [str(structured_dataset(tmp_path)), "--consortium", "people", "--methods", "vote"]
    result = CliRunner().invoke(eval_command, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["results"]}
    # 3 members' answers to 2 items, and 2 more samples of the best: the vote's runs reuse the members' answers
    assert data["new_calls"] == 3 * 2 + 2 * 2
    assert {name: (row["accuracy"], row["field_accuracy"]) for name, row in rows.items()} == {
        "right": (1.0, 1.0), "bad-name": (0.0, 0.5), "bad-age": (0.0, 0.5), "right×3": (1.0, 1.0),
        "oracle": (1.0, None), "vote": (1.0, 1.0)}  # each field has 2 of 3: the vote by field is right
    assert sim.calls("judge") == []
    asked = sim.calls("right")[0].user
    assert '"required": ["name", "age"]' in asked and "<answer>" not in sim.calls("right")[0].system
    text = CliRunner().invoke(eval_command, args, catch_exceptions=False).stdout
    assert "Structured items (2), scored per field: the share of the expected fields right:" in text
    assert "  bad-name  50 %" in text


def test_a_structured_line_with_a_bad_schema_or_answer_names_its_line(sim, tmp_path):
    from llm_consortium.evaluation.evaluate import DatasetError, read_dataset

    path = tmp_path / "bad.jsonl"
    for line, error in [({"prompt": "p", "answer": {"a": 1}, "schema": {"type": "objekt"}},
                         "line 1: its schema is not"),
                        ({"prompt": "p", "answer": "a", "schema": {"type": "object"}}, "line 1: with a schema, the "
                                                                                       "answer must be a JSON object")]:
        path.write_text(json.dumps(line) + "\n")
        try:
            read_dataset(path)
        except DatasetError as exc:
            assert error in str(exc)
        else:
            raise AssertionError("accepted")
