"""What the terminal shows on stderr. stdout carries only the answer.

Every piece of text from outside (models, providers, the database) passes
through ``printable`` before it is styled, so that it is shown and never
acted on by the terminal.
"""

from __future__ import annotations

import json

import click

from ..core.methods import render
from ..core.observer import Observer
from ..core.outcome import UNANSWERED
from ..core.pricing import dollars
from ..core.record import OutcomeRecord, RunRecord
from ..core.results import MemberResult, Usage
from ..core.safetext import cut, printable, single_line


def _rule(title: str) -> str:
    return click.style(f"── {title} " + "─" * max(0, 60 - len(title)), dim=True)


def _member_line(member: MemberResult) -> str:
    usage = member.usage
    count = "tokens unknown" if usage.unreported else f"{usage.total} tokens"
    status = "ok"
    if member.not_asked:
        status = "not asked (the adaptive panel stopped before it)"
    elif member.cancelled:
        status = "cancelled (quorum reached)"
    elif member.error:
        status = click.style("failed", fg="red")
    return click.style(
        f"[{single_line(member.model)} #{member.instance}] {status}, {member.seconds:.1f} s, {count}, "
        f"{usage_cost(usage)}",
        bold=True,
    )


def raw_responses(record: RunRecord) -> str:
    """Every round: each member's raw answer (or error), then the arbiter's raw reply."""
    lines = []
    for round_ in record.rounds:
        lines.append(_rule(f"Round {round_.number} · {usage_cost(round_.usage)}"))
        for member in round_.members:
            lines.append(_member_line(member))
            lines.append(printable(member.error if member.error else (member.text or "").strip()))
            lines.append("")
        if round_.raw:
            lines.append(click.style(f"[arbiter {single_line(record.settings.arbiter)}]", bold=True))
            lines.append(printable(round_.raw.strip()))
            lines.append("")
    return "\n".join(lines)


def tokens(usage: Usage) -> str:
    """A token count, saying so when some calls reported none (unknown, not 0)."""
    if not usage.unreported:
        return f"{usage.total:,} tokens"
    if not usage.total:
        return "tokens unknown (not reported by the model)"
    return f"at least {usage.total:,} tokens ({usage.unreported} calls reported none)"


def cost(cost_usd: float | None, priced_usd: float | None, unpriced: int | None) -> str:
    """Dollars, or why they are unknown (never $0 for an unknown price):
    ``cost unknown: 2 calls unpriced; $0.0031 known``. ``unpriced`` None:
    nothing was recorded about prices (a run recorded before they were)."""
    if cost_usd is not None:
        return dollars(cost_usd)
    if not unpriced:
        return "cost unknown"
    text = f"cost unknown: {unpriced} call{'s' if unpriced != 1 else ''} unpriced"
    return text + (f"; {dollars(priced_usd)} known" if priced_usd else "")


def short_cost(cost_usd: float | None, priced_usd: float | None) -> str:
    """A cost in a column: dollars; ``≥$0.0031`` when some calls were not
    priced (at least what was); ``?`` when nothing was."""
    if cost_usd is not None:
        return dollars(cost_usd)
    return f"≥{dollars(priced_usd)}" if priced_usd else "?"


def clip(text: str, width: int) -> str:
    """``single_line(text)``, cut to ``width`` characters with an ellipsis."""
    return cut(single_line(text), width)


def row_tokens(row) -> str:
    """A runs list row's (``store.RunRow``) tokens: "1,234", "≥1,234" when
    some calls reported none, "unknown" when none reported any."""
    if not row.unreported_calls:
        return f"{row.tokens:,}"
    return f"≥{row.tokens:,}" if row.tokens else "unknown"


def usage_cost(usage: Usage) -> str:
    """The cost of a record's usage."""
    return cost(usage.cost_usd, round(usage.cost, 8), usage.unpriced)


def usage_line(usage: Usage) -> str:
    """The ``-u`` line: tokens in and out, and dollars, unknown parts said to be unknown."""
    if usage.unreported and not usage.total:
        counted = "unknown (not reported by the model)"
    else:
        counted = f"{usage.input:,} input, {usage.output:,} output"
        if usage.unreported:
            counted += f" ({usage.unreported} calls reported none)"
    return f"Token usage: {counted} · {usage_cost(usage)}"


SOURCES = {"exact": "by short answers", "arbiter": "by the arbiter's groups", "embedding": "by embeddings"}


def agreement_text(agreement: float | None, details: dict | None) -> str:
    """"agreement 0.67 (measured by the arbiter's groups)", or "agreement unknown"."""
    if agreement is None:
        return "agreement unknown"
    source = SOURCES.get(((details or {}).get("agreement") or {}).get("source"))
    return f"agreement {agreement:.2f} (measured{' ' + source if source else ''})"


def groups_line(details: dict | None) -> str | None:
    """The members in each group of equivalent answers, largest first:
    "Groups: m1 #1, m2 #1 | m3 #1"; None when there are none."""
    groups = ((details or {}).get("agreement") or {}).get("groups")
    if not groups:
        return None
    text = " | ".join(", ".join(f"{single_line(str(m['model']))} #{m['instance']}" for m in group) for group in groups)
    return click.style("Groups:", bold=True) + " " + text


def panel_text(record: RunRecord) -> str:
    """ "2 of 3 agree, 3 of 3 answered (by short answers)", shown beside the
    arbiter's own confidence."""
    outcome = record.outcome
    source = SOURCES.get((record.synthesis.details.get("agreement") or {}).get("source"))
    return outcome.counts + (f" ({source})" if source and outcome.agreeing is not None else "")


def p_right_text(outcome: OutcomeRecord) -> list[str]:
    """ "p(right) ≈ 0.83 (calibrated on 120 items)" when the run had a calibration, else nothing."""
    if outcome.calibrated_items is None:
        return []
    known = "unknown" if outcome.p_right is None else f"≈ {outcome.p_right:.2f}"
    return [f"p(right) {known} (calibrated on {outcome.calibrated_items} items)"]


def outcome_lines(outcome: OutcomeRecord) -> list[str]:
    """The run's status when it is not a plain success, and each of its
    notes (a failed member, no judge, a budget stop, a threshold not
    reached, ...), one a line."""
    status = outcome.status
    color = "red" if status in UNANSWERED else "yellow"
    lines = [click.style(f"Status: {status}", fg=color, bold=True)] if status and status != "success" else []
    lines += [click.style(note_line(note), fg=color) for note in outcome.notes]
    return lines


def note_line(note: str) -> str:
    """A note as a sentence of its own, made printable."""
    note = printable(note).strip()
    return note[:1].upper() + note[1:] + ("" if note.endswith(".") else ".")


def summary(record: RunRecord) -> str:
    """Confidence, agreement, analysis, dissent and the round count, laid out for reading."""
    synthesis, outcome = record.synthesis, record.outcome
    rounds = len(record.rounds)
    failed = [m for m in record.last_members if m.error and not m.cancelled]
    parts = [f"Confidence {synthesis.confidence:.2f}", *p_right_text(outcome), panel_text(record)]
    parts += [
        f"{rounds} round{'s' if rounds != 1 else ''}",
        tokens(record.usage),
        usage_cost(record.usage),
        f"{record.seconds:.1f} s",
    ]
    if failed:
        parts.append(click.style(f"{len(failed)} member{'s' if len(failed) != 1 else ''} failed", fg="red"))
    lines = [_rule("Consortium"), " · ".join(parts)]
    lines += [f"  {single_line(m.model)} #{m.instance}: {printable(m.error)}" for m in failed]
    lines += outcome_lines(outcome)
    if outcome.budget_note:
        lines.append(click.style(f"Note: {printable(outcome.budget_note)}.", fg="yellow"))
    for title, text in (("analysis", synthesis.analysis), ("dissent", synthesis.dissent)):
        text = printable(text or "").strip()
        if text and text.lower() not in ("none", "none.", "n/a"):
            lines.append(click.style(title.capitalize() + ":", bold=True) + " " + text)
    lines += method_details(record.settings.method, synthesis.details)
    groups = groups_line(synthesis.details)
    if groups:
        lines.append(groups)
    if record.recorded:  # never a pointer to a record that is missing or stale
        lines.append(click.style(
            printable(f"Run {record.run_id}  (llm consortium inspect {record.run_id[:8]})"), dim=True
        ))
    return "\n".join(lines)


def summary_line(record: RunRecord) -> str:
    """The run in one line, for ``llm -m NAME`` and ``llm chat``: confidence,
    "k of n agree, m of n answered", rounds, tokens, dollars, seconds, the
    run id when the run is recorded, then its status when it is not a plain
    success, with every note (no judge decided, a budget stop, members
    failed, the threshold not reached, ...)."""
    outcome = record.outcome
    rounds = len(record.rounds)
    parts = [f"Confidence {record.synthesis.confidence:.2f}", *p_right_text(outcome), panel_text(record)]
    parts += [f"{rounds} round{'s' if rounds != 1 else ''}", tokens(record.usage), usage_cost(record.usage),
              f"{record.seconds:.1f} s"]
    if record.recorded:  # never a pointer to a record that is missing or stale
        parts.append(f"run {record.run_id[:8]}")
    status = outcome.status
    notes = "; ".join(printable(note) for note in outcome.notes)
    if status and status != "success":
        parts.append(click.style(f"{status}: {notes}" if notes else status,
                                 fg="red" if status in UNANSWERED else "yellow"))
    elif notes:
        parts.append(click.style(notes, fg="yellow"))
    if outcome.budget_note:
        parts.append(click.style("max cost checked against the known part of the cost only", fg="yellow"))
    return " · ".join(parts)


class Progress(Observer):
    """Live progress on stderr (a terminal): a line per member (with its
    review, in a council's peer review) and one for the arbiter, redrawn in
    place at most ten times a second.

    ``close()`` comes from the thread that prints the answer, not the
    events' (see ``Observer``), so drawing is guarded by a lock. Once closed
    (the answer has started), nothing more is drawn.
    """

    INTERVAL = 0.1

    def __init__(self, stream, arbiter: str):
        import threading

        self.stream = stream
        self.arbiter = arbiter
        self.lock = threading.Lock()
        self.lines_drawn = 0
        self.closed = False
        self.pending = False
        self.round = 0
        self.members: dict[tuple[str, int], str] = {}
        self.tokens: dict[tuple[str, int], int] = {}
        self.answered: set[tuple[str, int]] = set()
        self.reviews: dict[tuple[str, int], str] = {}
        self.arbiter_state = "waiting"

    def round_started(self, run, number):
        self.round = number
        self.members = {member: "waiting" for member in run.members}
        self.tokens = {member: 0 for member in run.members}
        self.answered = set()
        self.reviews = {}
        self.arbiter_state = "waiting for the members"
        self._changed()

    def member_chunk(self, run, number, model, instance, chunk):
        key = (model, instance)
        self.tokens[key] = self.tokens.get(key, 0) + 1
        self.members[key] = f"answering · ~{self.tokens[key]} tokens"
        self._changed()

    def member_retry(self, run, number, model, instance, error, delay):
        self.members[(model, instance)] = f"retrying in {delay:.1f} s · {single_line(error)[:60]}"
        self._changed()

    def member_finished(self, run, number, member, prompt):
        key = (member.model, member.instance)
        if member.cancelled:
            self.members[key] = "cancelled (quorum reached)"
        elif member.error:
            self.members[key] = click.style(f"failed: {single_line(member.error)[:80]}", fg="red")
        else:
            self.answered.add(key)
            self.members[key] = f"done in {member.seconds:.1f} s" + (
                "" if member.usage.unreported else f" · {member.usage.output} tokens"
            )
        self._changed()

    def call_started(self, run, number, role, model, instance):
        if role == "reviewer":
            self.reviews[(model, instance)] = "reviewing the other answers"
            self.arbiter_state = "waiting for the peer review"
        else:
            self.arbiter_state = "reading the answers"
        self._changed()

    def call_finished(self, run, number, role, model, instance, outcome, prompt):
        if role == "reviewer":
            self.reviews[(model, instance)] = (
                click.style(f"review failed: {single_line(outcome.error)[:60]}", fg="red") if outcome.error
                else "review in"
            )
            self._changed()

    def arbiter_chunk(self, run, number, chunk):
        self.arbiter_state = "writing"
        self._changed()

    def answer_chunk(self, run, number, text):
        self.close()  # the answer starts on stdout, on the same terminal

    def round_finished(self, run, round_):
        judgement = round_.judgement
        self.arbiter_state = f"confidence {judgement.confidence:.2f} · " + agreement_text(judgement.agreement, None)
        self._changed()

    def _changed(self):
        import asyncio

        if self.pending or self.closed:
            return
        self.pending = True
        asyncio.get_running_loop().call_later(self.INTERVAL, self.draw)

    def draw(self):
        with self.lock:
            self.pending = False
            if self.closed:
                return
            self._erase()
            lines = [click.style(f"Round {self.round}", bold=True)]
            lines += [
                f"  {single_line(model)} #{instance}: {state}"
                + (f" · {self.reviews[(model, instance)]}" if (model, instance) in self.reviews else "")
                for (model, instance), state in self.members.items()
            ]
            lines.append(f"  arbiter {single_line(self.arbiter)}: {self.arbiter_state}")
            width = _terminal_width()
            for line in lines:
                self.stream.write(_clip(line, width) + "\n")
            self.stream.flush()
            self.lines_drawn = len(lines)

    def close(self):
        """Collapse the live block into one line."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._erase()
            if self.round:
                summary = f"Round {self.round}: {len(self.answered)}/{len(self.members)} members answered"
                self.stream.write(click.style(summary, dim=True) + "\n")
            self.stream.flush()

    def write_above(self, text: str) -> None:
        """Print ``text`` (safe for a terminal) above the live block, which is
        drawn again on the next change."""
        with self.lock:
            self._erase()
            self.stream.write(text)
            self.stream.flush()
        self._changed()

    def _erase(self):
        if self.lines_drawn:
            self.stream.write(f"\x1b[{self.lines_drawn}F\x1b[J")
            self.lines_drawn = 0


def write_streamed(out, chunks) -> str:
    """Each chunk of a streamed answer written to ``out`` (a terminal) as it
    arrives, made printable piece by piece (a sequence split between two
    pieces cannot be completed: see ``safetext``), then a newline; returns
    the chunks' text as they came."""
    pieces = []
    try:
        for chunk in chunks:
            pieces.append(chunk)
            out.write(printable(chunk))
            out.flush()
    finally:
        if pieces:
            out.write("\n")
            out.flush()
    return "".join(pieces)


def method_details(method: str | None, details: dict) -> list[str]:
    """What the method computed (its render hook's data, ``core.methods``),
    a line each: the vote's tally, the council's ranking, notes. Details
    marked as such are left to the viewer."""
    lines = []
    for item in render(method, details):
        if item["kind"] == "tally":
            lines += tally_lines(item)
        elif item["kind"] == "ranking":
            lines += ranking_lines(item)
        elif item["kind"] == "note" and not item.get("detail"):
            label = click.style(f"{item['label']}:", bold=True) + " " if item.get("label") else ""
            lines.append(label + printable(item["text"] or ""))
    return lines


#: The most characters of one answer on the tally line (a reply with no short answer can be long).
TALLY_ANSWER_WIDTH = 60


def tally_lines(item: dict) -> list[str]:
    """"Vote: 42 ×2 (m1#1, m2#1); 41 ×1 (m3#1)": one line, the rows in their order."""
    tally = "; ".join(f"{clip(row['answer'], TALLY_ANSWER_WIDTH)} ×{row['count']}{tally_who(row)}"
                      for row in item["rows"])
    return [click.style(f"{item['title']}:", bold=True) + f" {tally}"]


def tally_who(row: dict) -> str:
    """" (m1#1, m2#1; no short answer)": who gave a tally row's answer, and
    why it did not count; "" for a row recorded before members were listed."""
    said = [single_line(", ".join(row.get("members") or [])), single_line(row.get("note") or "")]
    said = "; ".join(part for part in said if part)
    return f" ({said})" if said else ""


def ranking_lines(item: dict) -> list[str]:
    """The ranking, a line per answer; none when no ballot counted (a note
    then says so)."""
    rows = item["rows"]
    if not any(row["ballots"] for row in rows):
        return []
    lines = [click.style(f"{item['title']}:", bold=True)]
    for row in rows:
        low, high = row["interval"]
        lines.append(
            f"  {row['label']}  {single_line(row['model'])} #{row['instance']}  {row['score']:.2f} "
            f"[{low:.2f}, {high:.2f}]  ({row['ballots']} ballots)"
        )
    return lines


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 20)).columns


def _clip(line: str, width: int) -> str:
    """Keep a line within the terminal so it never wraps (which would break
    redrawing in place). Styled text is clipped by its visible length."""
    visible = click.unstyle(line)
    return line if len(visible) < width else visible[: width - 2] + "…"


class ToolLog(Observer):
    """``--td``: every tool a member called, with its arguments and output,
    on stderr as llm's ``--td`` shows them, but naming the member. Arguments
    and output come from models and tools, so only printable text is shown.
    With live progress on, the lines go above its block."""

    def __init__(self, stream, progress: Progress | None = None):
        self.stream = stream
        self.progress = progress

    def tool_called(self, run, round_number, model, instance, call):
        text = tool_call_text(f"Tool call by {single_line(model)} #{instance} (round {round_number})",
                              call["name"], call["arguments"], call["error"] or call["output"])
        if self.progress is not None:
            self.progress.write_above(text)
        else:
            self.stream.write(text)
            self.stream.flush()


def tool_call_text(label: str, name: str, arguments, result: str | None) -> str:
    """One tool call as ``--td`` and ``inspect`` show it: ``label: name(arguments)``
    on one line, then its output (or error) indented, a line each. The name,
    arguments and output come from models and tools: only printable text."""
    call = f"{single_line(name)}({single_line(json.dumps(arguments, ensure_ascii=False))})"
    heading = click.style(f"{label}: {call}", fg="yellow", bold=True)
    body = "\n".join("  " + printable(line) for line in str(result or "").splitlines() or [""])
    return f"{heading}\n{body}\n"
