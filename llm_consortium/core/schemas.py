"""Answers in a JSON schema (``--schema``): checking the schema before any
call, reading a model's JSON, checking it, and comparing two answers as
JSON values.

Validation uses the ``jsonschema`` library (JSON Schema as users write it
for llm's own ``--schema``, every draft, with clear messages), and its
``referencing`` library for ``$ref``, imported only when a run has a schema.
"""

from __future__ import annotations

import json
import re

from .config import ConsortiumConfigError
from .safetext import single_line

# A whole reply wrapped in a code fence, as models often write JSON.
_FENCED = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```$", re.IGNORECASE | re.DOTALL)

# The largest schema accepted, as JSON text. It is sent with every member's
# prompt and every judge's, in every round: at about 4 bytes a token, this
# is some 16,000 tokens on each call, far more than describing one answer needs.
MAX_SCHEMA_BYTES = 64 * 1024

# References, and keywords whose subschemas apply to the same instance (not
# to a part of it): a cycle through these alone never ends, whatever the answer.
_REFERENCES = ("$ref", "$dynamicRef")
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAPS = ("dependentSchemas", "dependencies")
# Keywords whose values are data, not subschemas.
_DATA = ("enum", "const", "examples", "default")


def check_text(text: str | None, flag: str = "--schema") -> None:
    """Refuse a ``--schema`` text (given to ``flag``) that starts as JSON
    (``{`` or ``[``) but is not a JSON object. llm reads any text that is
    not JSON as its concise schema DSL, so a truncated JSON schema would
    otherwise become a schema of odd property names, found out only after
    paying for every call."""
    stripped = (text or "").lstrip()
    if not stripped.startswith(("{", "[")):
        return
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        raise ConsortiumConfigError(f"{flag} starts like JSON but is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConsortiumConfigError(f"{flag} nests too deeply to be read") from None
    if not isinstance(value, dict):
        raise ConsortiumConfigError(f"{flag} must be a JSON object, got {_kind(value)}")


def check(schema) -> None:
    """Refuse, before any model is called, a schema no answer could be
    checked against: not a JSON Schema (jsonschema's own ``check_schema``),
    over ``MAX_SCHEMA_BYTES``, with a ``$ref`` that cannot be resolved, or
    one that refers to itself without reaching into the answer
    (``{"$ref": "#"}``), where every check of an answer would recurse
    without end. Raises ``ConsortiumConfigError`` with one line."""
    import jsonschema

    if not isinstance(schema, dict):
        raise ConsortiumConfigError(f"--schema must be a JSON object, got {_kind(schema)}")
    try:
        size = len(json.dumps(schema).encode())
    except RecursionError:
        raise ConsortiumConfigError("--schema nests too deeply to be read") from None
    if size > MAX_SCHEMA_BYTES:
        raise ConsortiumConfigError(f"--schema is {size:,} bytes of JSON, more than the {MAX_SCHEMA_BYTES:,} "
                                    "allowed (it is sent with every model call)")
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ConsortiumConfigError(f"--schema is not a valid JSON schema: {single_line(exc.message)}"
                                    + _where(exc.path)) from None
    except RecursionError:
        raise ConsortiumConfigError("--schema nests too deeply to be checked") from None
    reason = _reference_problem(schema, validator)
    if reason:
        raise ConsortiumConfigError(f"--schema {reason}")


def _reference_problem(schema: dict, validator) -> str | None:
    """Why the schema's references cannot work (one unresolvable, or a cycle
    that never reaches into the answer), or None.

    Walks every subschema once, with the base URI its ``$id`` gives it,
    resolving each ``$ref`` through ``referencing`` as the validator does
    (no network: remote references are unresolvable). Then looks for a
    cycle among the edges that keep to the same instance (``_IN_PLACE_*``).
    """
    from jsonschema_specifications import REGISTRY
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    # validator_for chose the validator from the schema's "$schema": the same dialect.
    specification = specification_with(validator.META_SCHEMA["$schema"])
    root = specification.create_resource(schema)
    resolver = REGISTRY.with_resource(root.id() or "", root).resolver_with_root(root)
    where: dict[int, str] = {}  # a subschema's id() -> its place, as a JSON pointer
    edges: dict[int, list[int]] = {}  # a subschema's id() -> those applied to the same instance
    stack = [(schema, resolver, "")]
    while stack:
        node, resolver, pointer = stack.pop()
        if isinstance(node, list):
            stack.extend((item, resolver, f"{pointer}/{i}") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict) or id(node) in where:
            continue
        where[id(node)] = pointer or "the top level"
        if isinstance(specification.id_of(node), str) and node is not schema:
            resolver = resolver.in_subresource(specification.create_resource(node))
        targets = []
        for keyword in _REFERENCES:
            reference = node.get(keyword)
            if isinstance(reference, str):
                try:
                    targets.append(resolver.lookup(reference).contents)
                except Unresolvable:
                    return f"has a {keyword} that cannot be resolved: {reference!r}" + _at(pointer)
        targets += [node.get(k) for k in _IN_PLACE_ONE]
        targets += [s for k in _IN_PLACE_LISTS if isinstance(node.get(k), list) for s in node[k]]
        targets += [s for k in _IN_PLACE_MAPS if isinstance(node.get(k), dict) for s in node[k].values()]
        edges[id(node)] = [id(t) for t in targets if isinstance(t, dict)]
        stack.extend((value, resolver, f"{pointer}/{key}") for key, value in node.items() if key not in _DATA)
    cycle = _cycle(edges)
    if cycle is not None:
        return f"refers to itself without end (at {where[cycle]}): no answer could be checked"
    return None


def _cycle(edges: dict[int, list[int]]) -> int | None:
    """A node on a cycle of ``edges``, or None (an iterative depth-first search)."""
    done: set[int] = set()
    for start in edges:
        if start in done:
            continue
        path, on_path = [(start, iter(edges.get(start, ())))], {start}
        while path:
            node, children = path[-1]
            child = next(children, None)
            if child is None:
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return child
            elif child not in done:
                path.append((child, iter(edges.get(child, ()))))
                on_path.add(child)
    return None


def _kind(value) -> str:
    """A JSON value's type, in JSON's words."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {list: "an array", str: "a string"}.get(type(value), "a number")


def _where(path) -> str:
    return _at("".join(f"/{part}" for part in path))


def _at(pointer: str) -> str:
    return f" (at {pointer})" if pointer else ""


def read_json(text: str):
    """The JSON value in ``text`` (a wrapping code fence aside); ValueError
    if there is none, or if it nests too deeply to read (model output is
    untrusted: ``[[[[...`` must not be a RecursionError)."""
    text = (text or "").strip()
    fenced = _FENCED.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def problem(text: str, schema: dict) -> str | None:
    """Why ``text`` is not a JSON value valid against ``schema``, or None when it is."""
    import jsonschema

    try:
        value = read_json(text)
    except ValueError as exc:
        return f"not JSON ({exc})"
    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    except RecursionError:  # a value (or schema) too deep to check is not a valid answer
        return "nested too deeply to be checked"
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def canonical(text: str) -> str | None:
    """``text`` as canonical JSON (keys sorted, no spaces), so answers that
    differ only in layout compare equal; None when it is not JSON."""
    try:
        return json.dumps(read_json(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):
        return None


def instructions(schema: dict) -> str:
    """What a model without native schema support is told."""
    return (
        "Answer with only a JSON value, no other text, that is valid against this JSON schema:\n"
        + json.dumps(schema)
    )
