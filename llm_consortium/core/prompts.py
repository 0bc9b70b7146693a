"""The text each model is sent. Templates live in ``templates/`` as plain text.

Member answers are untrusted text inside the arbiter's prompt: each is
fenced by a per-run random token that members never see, and any copy of
that token in their text is removed, so an answer cannot close its own
block or pose as the prompt's instructions. The tags the arbiter answers
in, and the council's ranking header, are neutralised in that text too
(``<synthesis>`` becomes ``‹synthesis>``): a judge that quotes an answer
quotes something that cannot be read as its own verdict. One answer
forwarded to a judge is cut to ``MAX_FORWARDED_CHARS`` (its beginning and
its end, where a final answer usually is); the full text stays in the
run's records.
"""

from __future__ import annotations

import json
import re
import secrets
from functools import cache
from importlib import resources
from string import Template


@cache
def template(name: str) -> Template:
    text = resources.files(__package__).joinpath("templates", f"{name}.txt").read_text("utf-8")
    return Template(text)


def new_fence() -> str:
    return "FENCE-" + secrets.token_hex(8)


# The most characters of one answer a judge is sent.
MAX_FORWARDED_CHARS = 12_000
# Tags a judge's reply is read by, and the prompt's own structure.
_CONTROL_TAGS = (
    "analysis", "groups", "dissent", "refinement_areas", "confidence", "synthesis",
    "thinking", "think", "reasoning", "area", "item", "original_prompt", "instructions",
)
_CONTROL_TAG = re.compile(rf"<(?=\s*/?\s*(?:{'|'.join(_CONTROL_TAGS)})\b)", re.IGNORECASE)
_RANKING_HEADER = re.compile(r"(final)([ \t]+)(ranking)", re.IGNORECASE)


def fenced(label: str, text: str, fence: str) -> str:
    """Untrusted ``text`` in a block of its own, made inert (see the module's doc)."""
    safe = neutralise(excerpt(text.replace(fence, "[removed]").strip()))
    return f"<<<{fence} BEGIN {label}>>>\n{safe}\n<<<{fence} END {label}>>>"


def neutralise(text: str) -> str:
    """``text`` with no tag or header a judge's reply is read by."""
    return _RANKING_HEADER.sub(r"\1-\3", _CONTROL_TAG.sub("\u2039", text))


def excerpt(text: str, limit: int = MAX_FORWARDED_CHARS) -> str:
    """``text`` if it is within ``limit``, else its first two thirds and last
    third of that, with a note of how much is left out."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted:,} characters not shown …]\n{text[-tail:]}"


# The parts of the arbiter's prompt that only some runs have.
_PARTS = {
    "system": Template(
        "\nThe person asking set these instructions for the answer; the synthesis must follow them:\n"
        "<instructions>\n$system\n</instructions>\n"
    ),
    "schema": Template(
        "\nThe synthesis must be only a JSON value, with no other text, valid against this JSON schema:\n$schema\n"
    ),
    "conversation": Template("\n# Conversation so far\nThe prompt continues this conversation:\n$conversation\n"),
    "history": Template("\n# Earlier rounds"),
    "round": Template("Round $number (confidence $confidence); areas to refine: $areas\n"),
}

# Why a judge's reply could not be used, as the reminder (``reminder``)
# tells the judge: each follows "could not be used because".
NO_SYNTHESIS = "it had no <synthesis> block"
UNCLOSED = "its last <synthesis> block was never closed with </synthesis>, as if the reply had been cut off"
EMPTY = "its <synthesis> block was empty"
ECHO = "its <synthesis> block repeated these instructions instead of answering"
NOT_IN_SCHEMA = Template("its synthesis must be only a JSON value valid against the schema, but it was $wrong")

# The templates whose text a judge reads as instructions (``instruction_texts``).
JUDGE_TEMPLATES = ("arbiter", "compact_arbiter", "reminder", "council_chair", "council_reminder", "vote_arbiter")
_PLACEHOLDER = re.compile(r"\$(?:\w+|\{\w+\})")


def instruction_texts() -> list[str]:
    """The fixed text of every judge prompt: each judge template's and each
    optional part's text between its placeholders, the reminder with each
    reason in place, and the reasons themselves.

    A reply that repeats these is an echo, not a verdict (``parsing``).
    What fills the placeholders (the question, the answers, earlier
    syntheses) is left out: a verdict may quote it.
    """
    reasons = [NO_SYNTHESIS, UNCLOSED, EMPTY, ECHO, NOT_IN_SCHEMA.template]
    texts = [template(name).template for name in JUDGE_TEMPLATES] + [part.template for part in _PARTS.values()]
    texts += [reminder(reason) for reason in reasons] + reasons
    return [piece for text in texts for piece in _PLACEHOLDER.split(text)]


def refine_prompt(prompt: str, round_number: int, previous) -> str:
    """What members get from round 2 on: the prompt and the last judgement."""
    areas = "\n".join(f"- {area}" for area in previous.refinement_areas) or "(none given)"
    return template("refine").substitute(
        prompt=prompt,
        round=round_number,
        synthesis=previous.synthesis.strip() or "(none)",
        dissent=previous.dissent.strip() or "(none)",
        areas=areas,
    )


def arbiter_prompt(
    *,
    prompt: str,
    round_number: int,
    answers: list[tuple[str, str]],
    fence: str,
    system: str | None = None,
    conversation: str = "",
    earlier: list = (),
    schema: dict | None = None,
) -> str:
    """The arbiter's prompt for one round.

    ``answers`` is a list of (neutral label, text); model names never appear.
    ``earlier`` holds the judgements of earlier rounds: only their syntheses
    and refinement areas are repeated, so the prompt grows linearly.
    """
    instructions = ""
    if system:
        instructions = _PARTS["system"].substitute(system=system.strip())
    if schema is not None:
        instructions += _PARTS["schema"].substitute(schema=json.dumps(schema))
    if conversation:
        conversation = _PARTS["conversation"].substitute(conversation=conversation.strip())
    history = ""
    if earlier:
        parts = [_PARTS["history"].template]
        for number, judgement in enumerate(earlier, 1):
            parts.append(
                _PARTS["round"].substitute(
                    number=number,
                    confidence=f"{judgement.confidence:.2f}",
                    areas="; ".join(judgement.refinement_areas) or "none",
                )
                + fenced(f"Round {number} synthesis", judgement.synthesis, fence)
            )
        history = "\n".join(parts) + "\n"
    responses = "\n\n".join(fenced(label, text, fence) for label, text in answers)
    return template("arbiter").substitute(
        fence=fence,
        instructions=instructions,
        prompt=prompt.strip(),
        conversation=conversation,
        history=history,
        round=round_number,
        responses=responses,
    )


# The most characters of one answer in the compact prompt.
COMPACT_ANSWER_CHARS = 160


def compact_arbiter_prompt(prompt: str, answers: list[tuple[str, str]], fence: str) -> str:
    """The arbiter's prompt for a model with a small context window: short
    instructions, the three tags that decide (groups, so that agreement can
    still be measured, confidence and synthesis), the answers cut to
    ``COMPACT_ANSWER_CHARS`` each, and no history of earlier rounds."""
    responses = "\n".join(
        f"<<<{fence} BEGIN {label}>>>\n{neutralise(excerpt(text.strip(), COMPACT_ANSWER_CHARS))}\n"
        f"<<<{fence} END {label}>>>"
        for label, text in answers
    )
    return template("compact_arbiter").substitute(
        fence=fence, prompt=excerpt(prompt.strip(), COMPACT_ANSWER_CHARS * 2), responses=responses
    )


def reminder(problem: str) -> str:
    """Appended to the arbiter's prompt when its reply could not be used,
    saying why (``problem``, one of the reasons above) and asking again for
    every tag, ``<groups>`` included, closed."""
    return template("reminder").substitute(problem=problem)


# The most characters of one answer in the grouping prompt.
GROUPING_ANSWER_CHARS = 600


def grouping_prompt(prompt: str, answers: list[tuple[str, str]], fence: str) -> str:
    """A short prompt that asks the arbiter only which answers agree, by
    ``answers``' labels (``agreement.parse_groups`` reads the reply): what
    the members' own agreement is measured by when no judge could be read."""
    responses = "\n\n".join(
        fenced(label, excerpt(text.strip(), GROUPING_ANSWER_CHARS), fence) for label, text in answers
    )
    return template("grouping").substitute(
        fence=fence, prompt=excerpt(prompt.strip(), GROUPING_ANSWER_CHARS), responses=responses
    )
