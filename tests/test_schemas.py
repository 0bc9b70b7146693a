"""A --schema is checked before any model is called (issue 19, item 6):
through llm's real CLI against the simulated provider, a schema no answer
could be checked against is one line on stderr and exit 1, and the
simulator saw no request. Answers too deep to check are data, never a
traceback."""

import json

import pytest

from llm_consortium.core.schemas import MAX_SCHEMA_BYTES
from llm_consortium.evaluation.simulator import arbiter_xml
from helpers import invoke

FACES = {
    "run": ["consortium", "run", "-m", "m1", "--arbiter", "judge", "--no-raw"],
    "llm -m": ["-m", "c"],
}
TRUNCATED = '{"type": "object", "properties": {"age": {"type": "integer"}'
BIG = json.dumps({"type": "object", "properties": {f"field{i}": {"type": "string", "description": "x" * 60}
                                                   for i in range(MAX_SCHEMA_BYTES // 80)}})
BAD = {
    # every check of an answer recursed until a RecursionError (found only once the arbiter answered)
    "self-reference": ('{"$ref": "#"}', "refers to itself without end"),
    "cycle through allOf": ('{"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}},'
                            ' "$ref": "#/$defs/a"}', "refers to itself without end"),
    # llm reads text that is not JSON as its schema DSL: this became properties named '{"type": "object"' ...
    "truncated JSON": (TRUNCATED, "not valid JSON"),
    "unresolvable ref": ('{"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}',
                         "cannot be resolved: '#/$defs/missing'"),
    "remote ref": ('{"$ref": "https://example.com/person.json"}', "cannot be resolved"),
    "not a schema": ('{"type": "objekt"}', "not a valid JSON schema"),
    "JSON, not an object": ('["name", "age"]', "must be a JSON object, got an array"),
    "oversized": (BIG, f"more than the {MAX_SCHEMA_BYTES:,} allowed"),
}


@pytest.fixture
def panel_c(sim):
    sim.add("m1", reply='{"age": 30}')
    sim.add("judge", reply=arbiter_xml('{"age": 30}', 0.9))
    assert invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    return sim


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("case", BAD)
def test_a_schema_that_cannot_work_is_one_line_before_any_call(panel_c, face, case):
    schema, expected = BAD[case]
    result = invoke(*FACES[face], "How old?", "--schema", schema)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: --schema") and expected in line, line
    assert panel_c.requests == []


def test_a_truncated_schema_multi_is_refused_too(panel_c):
    result = invoke("-m", "c", "How old?", "--schema-multi", TRUNCATED)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --schema-multi starts like JSON but is not valid JSON")
    assert panel_c.requests == []


@pytest.mark.parametrize("face", FACES)
def test_a_recursive_schema_that_reaches_into_the_answer_is_fine(panel_c, face):
    """Recursion through a property consumes the answer: it ends. Only the
    cycles that stay in place are refused."""
    panel_c.add("m1", reply='{"age": 30, "child": {"age": 3}}')
    panel_c.add("judge", reply=arbiter_xml('{"age": 30, "child": {"age": 3}}', 0.9))
    schema = '{"type": "object", "properties": {"age": {"type": "integer"}, "child": {"$ref": "#"}}}'
    result = invoke(*FACES[face], "How old?", "--schema", schema)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"age": 30, "child": {"age": 3}}


def test_an_answer_nested_too_deeply_to_check_is_an_error_line_not_a_traceback(panel_c):
    """Model output is untrusted: JSON nested deeper than Python's recursion
    limit, against a schema that recurses with it, from the members and the
    arbiter alike."""
    deep = "[" * 5000 + "]" * 5000
    panel_c.add("m1", reply=deep)
    panel_c.add("judge", reply=arbiter_xml(deep, 0.9))
    result = invoke(*FACES["run"], "Nest", "--schema", '{"type": "array", "items": {"$ref": "#"}}')
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    # The arbiter's synthesis, brackets alone, is no verdict; the one member's answer cannot be checked:
    # no answer, said in one line.
    assert result.stderr.splitlines()[-1].startswith("Error: No verdict")
