"""The method registry: how a round is judged. A method is one module in
this package, and its file's name is its name (what ``--method`` takes).
Each declares

    NAME = "vote"                                   # its file's name
    HELP = "..."                                    # one line, for --help
    MEMBER_INSTRUCTIONS = "..."                     # optional: a note added to every member's system prompt
    async def judge(panel) -> tuple[Judgement, str]  # the judgement and the raw arbiter text ("" if none)
    def judges(arbiter, members) -> list[tuple[str, int]]
        # the round's judging calls, for --max-cost: (model, how many of the members' answers it reads)
    def render(details: dict) -> list[dict]
        # what to show of its recorded details, as data items ({"kind": "tally" | "ranking" | "note", ...});
        # each face formats them its own way (docs/architecture.md, "Adding a method")
    def answer(judgement) -> str | None             # the judgement's short answer, as eval scores it
    EVAL_ORDER = 1                                  # optional: where eval lists it by default (else last)

llm imports the plugin on every command, so the names are read from the
package's files without importing them; a method's module is imported
only when a run or a command needs it.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module


def names() -> tuple[str, ...]:
    """Every method in the package, in alphabetical order."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")))


def method(name: str):
    """The module of method ``name`` (one of ``names()``)."""
    if name not in names():
        raise ValueError(f"Unknown method {name!r}: choose one of {', '.join(names())}")
    module = import_module(f".{name}", __name__)
    if module.NAME != name:
        raise ValueError(f"The method in {name}.py declares the NAME {module.NAME!r}: a method is named by its file")
    return module


async def judge(name: str, panel):
    return await method(name).judge(panel)


def member_instructions(name: str) -> str | None:
    return getattr(method(name), "MEMBER_INSTRUCTIONS", None)


def judges(name: str, arbiter: str, members: list[str]) -> list[tuple[str, int]]:
    return method(name).judges(arbiter, members)


def render(name: str | None, details: dict) -> list[dict]:
    """What a run's method computed, as data; nothing for a method that is
    not installed (a run recorded by another version) or nothing recorded."""
    if name not in names() or not details:
        return []
    return method(name).render(details)


def answer(name: str, judgement) -> str | None:
    return method(name).answer(judgement)


def help_text(name: str) -> str:
    return method(name).HELP
