"""How a round is judged. Each method is a module with

    async def judge(panel) -> tuple[Judgement, str]   # the judgement and the raw arbiter text ("" if none)

and optionally ``MEMBER_INSTRUCTIONS``, a note added to every member's
system prompt (the vote method asks for an ``<answer>`` block).
"""

from __future__ import annotations

from importlib import import_module


def _method(name: str):
    return import_module(f".{name}", __name__)


async def judge(name: str, panel):
    return await _method(name).judge(panel)


def member_instructions(name: str) -> str | None:
    return getattr(_method(name), "MEMBER_INSTRUCTIONS", None)
