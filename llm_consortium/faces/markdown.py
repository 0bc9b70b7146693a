"""``llm consortium inspect RUN --markdown``: one recorded run as a Markdown
transcript to paste into an issue or a chat, made from its ``RunRecord``.

It is self-contained: the question, the answer (or why there is none), the
status, the confidence, "k of n agree", the dissent and the cost first, then
each round's answers and verdict. Model text is untrusted and must not
change the transcript's structure: every text a model wrote (an answer, the
analysis, the dissent) is in a fenced block whose fence is longer than any
run of backticks inside it, and every other text from outside (model names,
errors, notes) sits on one line with Markdown's punctuation escaped. All of
it passes through ``safetext.printable`` first: no terminal escapes or control
characters, and bidirectional controls shown by name, never applied.
"""

from __future__ import annotations

import re

import click

from ..core.record import RoundRecord, RunRecord
from ..core.results import MemberResult, Verdict
from ..core.safetext import printable, single_line
from .display import agreement_text, method_details, panel_text, tokens, usage_cost

_BACKTICKS = re.compile("`+")
# What Markdown (CommonMark, and GitHub's tables, strikethrough and math)
# reads as structure within a line; a backslash makes each literal.
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>&~|$#!])")
# What starts a block (a list item, a setext underline) when a line begins
# with it: inline text is never the start of a line, but a list item's text
# is the start of its own block ("- - x" is a list in a list).
_BLOCK_START = re.compile(r"^([-+=]|\d+(?=[.)]))")
# An analysis or dissent that says nothing, left out.
_NO_DISSENT = ("", "none", "none.", "n/a")


def fenced(text: str) -> str:
    """``text`` (made printable) as a fenced code block that nothing in it can
    close: the fence is a run of backticks longer than any inside."""
    text = printable(text).strip("\n")
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def inline(text: str) -> str:
    """``text`` on one line (made printable), with every character Markdown
    would read as structure escaped."""
    escaped = _INLINE_SPECIAL.sub(r"\\\1", single_line(printable(text)))
    start = _BLOCK_START.match(escaped)
    if start is None:
        return escaped
    if start.group().isdigit():  # "1." or "1)": the dot or the bracket made literal
        return f"{start.group()}\\{escaped[start.end():]}"
    return f"\\{escaped}"


def transcript(record: RunRecord) -> str:
    """The run as Markdown."""
    outcome, settings = record.outcome, record.settings
    verdict = record.synthesis
    rounds = len(record.rounds)
    lines = [f"## Consortium run {record.run_id[:8]}", ""]
    facts = [
        ("Consortium", inline(record.name) if record.name else "unsaved"),
        ("Members", inline(", ".join(settings.models))),
        ("Arbiter", f"{inline(settings.arbiter or '')} (method {inline(settings.method)})"),
        ("Status", inline(outcome.status)),
        ("Confidence", f"{verdict.confidence:.2f}" if outcome.has_answer else "none (no answer)"),
        ("Panel", inline(panel_text(record)) if outcome.members else "unknown"),
        ("Rounds", f"{rounds} of at most {settings.max_iterations}" if settings.max_iterations else str(rounds)),
        ("Cost", inline(f"{usage_cost(record.usage)} ({tokens(record.usage)})")),
        ("Started", inline(record.started or "unknown")),
    ]
    lines += [f"- **{label}:** {value}" for label, value in facts]
    lines += ["", "**Question**", "", fenced(record.prompt), ""]
    if outcome.has_answer:
        lines += ["**Answer**", "", fenced(verdict.synthesis), ""]
    else:
        lines += ["**No answer.**", ""]
    if verdict.dissent.strip().lower() not in _NO_DISSENT:  # (the answer's; each round has its own)
        lines += ["**Dissent**", "", fenced(verdict.dissent), ""]
    if outcome.notes:
        lines += ["**Notes**", ""] + [f"- {inline(note)}" for note in outcome.notes] + [""]
    if record.error:
        lines += [f"**Error:** {inline(record.error)}", ""]
    for round_ in record.rounds:
        lines += _round(round_, record)
    lines += ["---", f"*Recorded by llm-consortium: llm consortium inspect {record.run_id[:8]}*"]
    return "\n".join(lines) + "\n"


def _round(round_: RoundRecord, record: RunRecord) -> list[str]:
    lines = [f"### Round {round_.number} · {inline(usage_cost(round_.usage))}", ""]
    for member in round_.members:
        lines += _member(member)
    if round_.verdict is not None:
        lines += _verdict(round_.verdict, record.settings.method)
    return lines


def _member(member: MemberResult) -> list[str]:
    heading = f"#### {inline(member.model)} #{member.instance} · {member.seconds:.1f} s"
    if member.error is not None or member.text is None:
        state = "cancelled" if member.cancelled else "failed"
        return [heading, "", f"*{state}:* {inline(member.error or 'no answer')}", ""]
    return [heading, "", fenced(member.text), ""]


def _verdict(verdict: Verdict, method: str) -> list[str]:
    lines = ["#### Verdict", ""]
    if verdict.no_verdict:
        lines += ["*No verdict this round: no judge could be read and no answer has a majority.*", ""]
    elif not verdict.parse_ok:
        lines += ["*No judge decided this round: the answer is the one most members gave.*", ""]
    lines += [f"Confidence {verdict.confidence:.2f} · {inline(agreement_text(verdict.agreement, verdict.details))}",
              ""]
    details = [click.unstyle(line) for line in method_details(method, verdict.details)]
    lines += [f"- {inline(line)}" for line in details] + ([""] if details else [])
    for title, text in (("Analysis", verdict.analysis), ("Dissent", verdict.dissent)):
        if text.strip().lower() not in _NO_DISSENT:
            lines += [f"*{title}*", "", fenced(text), ""]
    return lines

