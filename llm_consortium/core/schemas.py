"""Answers in a JSON schema (``--schema``): reading a model's JSON,
checking it, and comparing two answers as JSON values.

Validation uses the ``jsonschema`` library (JSON Schema as users write it
for llm's own ``--schema``, every draft, with clear messages), imported only
when a run has a schema.
"""

from __future__ import annotations

import json
import re

# A whole reply wrapped in a code fence, as models often write JSON.
_FENCED = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```$", re.IGNORECASE | re.DOTALL)


def read_json(text: str):
    """The JSON value in ``text`` (a wrapping code fence aside); ValueError if there is none."""
    text = (text or "").strip()
    fenced = _FENCED.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def problem(text: str, schema: dict) -> str | None:
    """Why ``text`` is not a JSON value valid against ``schema``, or None when it is."""
    import jsonschema

    try:
        value = read_json(text)
    except ValueError as exc:
        return f"not JSON ({exc})"
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def canonical(text: str) -> str | None:
    """``text`` as canonical JSON (keys sorted, no spaces), so answers that
    differ only in layout compare equal; None when it is not JSON."""
    try:
        return json.dumps(read_json(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return None


def instructions(schema: dict) -> str:
    """What a model without native schema support is told."""
    return (
        "Answer with only a JSON value, no other text, that is valid against this JSON schema:\n"
        + json.dumps(schema)
    )
