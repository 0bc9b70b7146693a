"""The text each model is sent. Templates live in ``templates/`` as plain text.

Member answers are untrusted text inside the arbiter's prompt: each is
fenced by a per-run random token that members never see, and any copy of
that token in their text is removed, so an answer cannot close its own
block or pose as the prompt's instructions.
"""

from __future__ import annotations

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


def fenced(label: str, text: str, fence: str) -> str:
    clean = text.replace(fence, "[removed]")
    return f"<<<{fence} BEGIN {label}>>>\n{clean.strip()}\n<<<{fence} END {label}>>>"


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
) -> str:
    """The arbiter's prompt for one round.

    ``answers`` is a list of (neutral label, text); model names never appear.
    ``earlier`` holds the judgements of earlier rounds: only their syntheses
    and refinement areas are repeated, so the prompt grows linearly.
    """
    instructions = ""
    if system:
        instructions = (
            "\nThe person asking set these instructions for the answer; "
            f"the synthesis must follow them:\n<instructions>\n{system.strip()}\n</instructions>\n"
        )
    if conversation:
        conversation = (
            "\n# Conversation so far\nThe prompt continues this conversation:\n"
            f"{conversation.strip()}\n"
        )
    history = ""
    if earlier:
        parts = ["\n# Earlier rounds"]
        for number, judgement in enumerate(earlier, 1):
            areas = "; ".join(judgement.refinement_areas) or "none"
            parts.append(
                f"Round {number} (confidence {judgement.confidence:.2f}); "
                f"areas to refine: {areas}\n"
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


def reminder() -> str:
    return template("reminder").template
