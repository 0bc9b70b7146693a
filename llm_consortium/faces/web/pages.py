"""The viewer's pages, as HTML built with ``html.el`` (escaped by construction).

A run's page reads a ``record.RunRecord`` (``store.load_run``), whichever
version recorded the run; the runs list reads ``store.list_runs``' rows
(``store.RunRow``), None where a run recorded by an older version lacks a column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

from ...core.config import split_count
from ...core.outcome import STATUSES, counts_text
from ...core.methods import render
from ...core.record import CallRecord, OutcomeRecord, RoundRecord, RunRecord
from ..display import cost, p_right_text, row_tokens, tokens
from .html import Markup, el, frag, markdown, scrolls

FINISHED = STATUSES  # every status but running


def layout(title: str, body, *, live: str | None = None) -> Markup:
    """A whole page. ``live``: the address of the run's event stream, when
    the page should update in place."""
    return Markup("<!doctype html>" + el(
        "html",
        el("head",
           el("meta", charset="utf-8"),
           el("meta", name="viewport", content="width=device-width, initial-scale=1"),
           el("title", title, " · llm-consortium"),
           el("link", rel="stylesheet", href="/static/viewer.css"),
           el("script", src="/static/viewer.js", defer=True)),
        el("body",
           el("a", "Skip to content", href="#content", class_="skip"),
           el("nav", el("a", "llm-consortium", href="/", class_="brand"),
              el("a", "Runs", href="/"), el("a", "Ask", href="/ask"), aria_label="Site"),
           el("main", body, id="content", tabindex="-1", data_live=live)),
        lang="en",
    ))


# The runs list


@dataclass
class Paging:
    """Which page of the runs list this is (from 1), of how many runs."""

    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first(self) -> int:
        return (self.number - 1) * self.size + 1


def runs_page(runs: list, facets: dict[str, list[str]], filters: dict[str, str], paging: Paging) -> Markup:
    def choice(name: str, label: str, values: list[str]):
        return el("label", label, " ", el(
            "select",
            el("option", "any", value=""),
            [el("option", value, value=value, selected=filters.get(name) == value) for value in values],
            name=name,
        ))

    form = el(
        "form",
        el("label", "Prompt contains ", el("input", type="search", name="q", value=filters.get("q", ""),
                                           placeholder="search prompts")),
        choice("consortium", "Consortium", facets["name"]),
        choice("method", "Method", facets["method"]),
        choice("status", "Status", sorted(set(facets["status"]) | {"interrupted"})),
        el("button", "Filter", type="submit"),
        method="get", action="/", class_="filters",
    )
    if runs:
        head = ["Started", "Prompt", "Consortium", "Method", "Status", "Confidence", "Agreement", "Rounds",
                "Tokens", "Cost", "Duration"]
        table = el("table", el("thead", el("tr", [el("th", h) for h in head])), el("tbody", [
            el("tr",
               el("td", el("time", short_time(r.started), datetime=r.started)),
               el("td", el("a", excerpt(r.prompt or "", 120), href=f"/runs/{r.id}"), class_="prompt"),
               el("td", r.name or ", ".join(r.models) or "-"),
               el("td", r.method or "-"),
               el("td", status_badge(r.status)),
               el("td", number(r.confidence), class_="num"),
               el("td", agreement(r), class_="num"),
               el("td", r.iterations or 0, class_="num"),
               el("td", row_tokens(r), class_="num"),
               el("td", cost(r.cost_usd, r.priced_usd, r.unpriced_calls), class_="num"),
               el("td", duration(r.started, r.finished, r.status), class_="num"),
               data_run=r.id)
            for r in runs
        ]), class_="runs")
    elif paging.total:  # a page past the last
        table = el("p", f"There are {paging.total:,} runs, on {paging.pages:,} pages. ",
                   el("a", "First page", href=page_link(filters, 1)), class_="empty")
    elif any(filters.values()):
        table = el("p", "No run matches these filters. ", el("a", "Show all runs", href="/"), class_="empty")
    else:
        table = el("p", "No runs recorded yet. Run a consortium (llm consortium run \"…\", or llm -m NAME) "
                        "or ", el("a", "ask one here", href="/ask"), ".", class_="empty")
    return layout("Runs", frag(el("h1", "Runs"), form, count_line(runs, paging, filters), table,
                               pager(paging, filters)))


def count_line(runs: list, paging: Paging, filters: dict[str, str]) -> Markup | None:
    """ "Runs 51–100 of 10,001 (matching the filters)", above the table."""
    if not runs:
        return None
    matching = " matching the filters" if any(filters.values()) else ""
    return el("p", f"Runs {paging.first:,}–{paging.first + len(runs) - 1:,} of {paging.total:,}{matching}",
              class_="count")


def pager(paging: Paging, filters: dict[str, str]) -> Markup | None:
    """Links to the newer and older pages, and the first and last, filters kept."""
    if paging.pages == 1:
        return None
    number, last = paging.number, paging.pages
    links = [
        el("a", "« Newest", href=page_link(filters, 1)) if number > 1 else None,
        el("a", "‹ Newer", href=page_link(filters, number - 1), rel="prev") if number > 1 else None,
        el("span", f"Page {number:,} of {last:,}"),
        el("a", "Older ›", href=page_link(filters, number + 1), rel="next") if number < last else None,
        el("a", "Oldest »", href=page_link(filters, last)) if number < last else None,
    ]
    return el("div", links, class_="pager", role="navigation", aria_label="Pages of runs")


def page_link(filters: dict[str, str], number: int) -> str:
    """The runs list's address for page ``number`` with these filters."""
    query = {key: value for key, value in filters.items() if value}
    if number > 1:
        query["page"] = str(number)
    return "/?" + urlencode(query) if query else "/"


# A run's page: one function per section, so a section is added in one place.

# The status in words, in the outcome vocabulary (``core.outcome``); a partial
# run says how many members failed (``status_words``).
STATUS_WORDS = {
    "success": "Answered", "below_threshold": "Below threshold", "partial": "Partial", "no_verdict": "No verdict",
    "degraded": "Fallback decided", "budget": "Budget stop", "cancelled": "Cancelled",
    "interrupted": "Interrupted", "running": "Running", "failed": "Failed",
}


def run_page(record: RunRecord, conversation: dict | None, configs: list[str], csrf: str) -> Markup:
    live = f"/runs/{record.run_id}/events" if record.outcome.status not in FINISHED else None
    return layout(page_title(record), el("div", run_body(record, conversation, configs, csrf), id="run"), live=live)


def page_title(record: RunRecord) -> str:
    """The tab's title: the run's progress or status, then its prompt."""
    return f"{progress(record) or status_words(record.outcome)} · {excerpt(record.prompt or 'Run', 60)}"


def run_body(record: RunRecord, conversation: dict | None, configs: list[str], csrf: str) -> Markup:
    """Everything the page shows of a run; swapped in whole as it updates."""
    running = record.outcome.status not in FINISHED
    rounds = record.rounds
    answer = record.synthesis.synthesis if record.outcome.has_answer else None
    return frag(
        run_header(record, conversation),
        [el("p", note, class_="notice") for note in notes(record.outcome)],
        el("p", "Error: ", record.error, class_="error") if record.error else None,
        el("section", el("h2", "Answer"), el("div", markdown(answer), class_="markdown"),
           class_="answer") if answer else None,
        [round_section(record, r, running and r is rounds[-1]) for r in rounds],
        audits_section(record.audits),
        el("p", "Waiting for the members' first answers: ", ", ".join(expected_members(record, 1)), class_="waiting")
        if running and not rounds else None,
        timeline(record),
        continue_form(record, conversation, configs, csrf) if not running else None,
    )


def verdict_banner(record: RunRecord) -> Markup:
    """What the run came to, at a glance: its status in words, then the
    facts that say how sure it is (``verdict_facts``); a run of several
    rounds adds its confidence per round."""
    status = record.outcome.status
    return el(
        "section",
        el("p", el("strong", status_words(record.outcome), class_="verdict-words"), " ", status_badge(status),
           class_="verdict-status"),
        el("dl", [el("div", el("dt", label), el("dd", value)) for label, value in verdict_facts(record)],
           class_="verdict-facts"),
        confidence_chart(record),
        class_=f"verdict verdict-{status}", aria_label="Verdict", data_title=page_title(record),
    )


def status_words(outcome: OutcomeRecord) -> str:
    """ "Answered", "Partial: 1 of 3 failed", ...: the status as a person reads it."""
    words = STATUS_WORDS.get(outcome.status, outcome.status)
    if outcome.status == "partial" and outcome.members:
        asked = outcome.members - (outcome.not_asked or 0)  # an adaptive panel's unasked members did not fail
        return f"{words}: {asked - (outcome.answered or 0)} of {asked}{' asked' if outcome.not_asked else ''} failed"
    return words


def verdict_facts(record: RunRecord) -> list[tuple[str, object]]:
    """The banner's (label, value) pairs: confidence, agreement, cost, time;
    while the run runs, its progress and the members it waits for."""
    outcome, verdict, settings = record.outcome, record.verdict, record.settings
    running = outcome.status not in FINISHED
    threshold = settings.confidence_threshold
    confidence = number(verdict.confidence if verdict else None)
    if verdict and threshold is not None:
        confidence += f" (threshold {threshold:.2f})"
    facts = [("Confidence", confidence)]
    if running:
        current = record.rounds[-1] if record.rounds else None
        facts.append(("Progress", progress(record)))
        waiting = pending(record, current) if current else expected_members(record, 1)
        if waiting:
            facts.append(("Waiting for", ", ".join(waiting)))
    elif outcome.not_asked:  # --adaptive: "2 of 5 agree, 3 not asked: decisive"
        facts.append(("Agreement", outcome.counts))
    elif outcome.members:
        agree = "agreement unknown" if outcome.agreeing is None else f"{outcome.agreeing} of {outcome.members} agree"
        facts.append(("Agreement", agree))
        facts.append(("Answered", f"{outcome.answered} of {outcome.members}"))
    else:  # recorded before the counts were
        facts.append(("Agreement", number(verdict.agreement if verdict else None)))
    for line in p_right_text(outcome):  # a calibrated consortium's: "p(right) ≈ 0.83 (calibrated on 120 items)"
        facts.append(("Calibrated", line))
    facts.append(("Cost", cost(record.usage.cost_usd, round(record.usage.cost, 8), record.usage.unpriced)))
    facts.append(("Time", el("span", duration(record.started, record.finished, outcome.status),
                             data_since=record.started if running else None, class_="elapsed")))
    return facts


def progress(record: RunRecord) -> str | None:
    """A running run's progress ("Round 1: 2 of 3 answered", "Round 1:
    judging"); None once it has ended."""
    if record.outcome.status in FINISHED:
        return None
    if not record.rounds:
        return "Starting"
    current = record.rounds[-1]
    answered = len(member_calls(record, current))
    asked = max(len(expected_members(record, current.number)), answered)
    if answered == asked and current.verdict is None:
        return f"Round {current.number}: judging"
    return f"Round {current.number}: {answered} of {asked} answered"


def confidence_chart(record: RunRecord) -> Markup | None:
    """The judged rounds' confidence as a small line chart (inline SVG,
    drawn here: no script), with the threshold dashed; None for one round."""
    points = [(r.number, r.verdict.confidence) for r in record.rounds if r.verdict]
    if len(points) < 2:
        return None
    width, height, pad = 200, 60, 6

    def x(i: int) -> float:
        return pad + i * (width - 2 * pad) / (len(points) - 1)

    def y(value: float) -> float:
        return pad + (1 - min(max(value, 0.0), 1.0)) * (height - 2 * pad)

    threshold = record.settings.confidence_threshold
    said = ", ".join(f"round {n}: {c:.2f}" for n, c in points)
    label = f"Confidence by round: {said}" + (f" (threshold {threshold:.2f})" if threshold is not None else "")
    return el(
        "figure",
        el("svg",
           el("line", x1=str(pad), x2=str(width - pad), y1=f"{y(threshold):.1f}", y2=f"{y(threshold):.1f}",
              class_="threshold") if threshold is not None else None,
           el("polyline", points=" ".join(f"{x(i):.1f},{y(c):.1f}" for i, (_, c) in enumerate(points)),
              class_="line"),
           [el("circle", el("title", f"Round {n}: {c:.2f}"), cx=f"{x(i):.1f}", cy=f"{y(c):.1f}", r="3")
            for i, (n, c) in enumerate(points)],
           viewBox=f"0 0 {width} {height}", width=str(width), height=str(height), role="img", aria_label=label,
           class_="confidence-chart"),
        el("figcaption", "Confidence by round: ", said),
        class_="confidence",
    )


def run_header(record: RunRecord, conversation: dict | None) -> Markup:
    settings = record.settings
    facts = [
        ("Consortium", record.name or "unsaved"),
        ("Method", settings.method or "-"),
        ("Members", ", ".join(settings.models)),
        ("Arbiter", settings.arbiter or "-"),
        ("Rounds", record.iterations),
        ("Tokens", tokens(record.usage)),
        ("Started", short_time(record.started)),
    ]
    ids = [el("span", "Run ", el("code", record.run_id, class_="run-id")),
           el("span", el("code", f"llm consortium inspect {record.run_id[:8]}"))]
    if conversation:
        ids.append(el("span", "In llm logs: ", el("code", f"llm logs --cid {conversation['id']}",
                                                    class_="llm-cid")))
    elif record.outcome.status not in FINISHED:
        ids.append(el("span", "llm logs: once it ends", class_="muted"))
    else:
        ids.append(el("span", "Not in llm logs (--no-log, a failed run, or the Python API)", class_="muted"))
    turns = []
    if conversation and len(conversation["runs"]) > 1:
        turns = el("p", "Conversation: ", [
            frag(" → " if i else "", el("strong", f"turn {i + 1} (this run)") if run_id == record.run_id
                 else el("a", f"turn {i + 1}", href=f"/runs/{run_id}"))
            for i, run_id in enumerate(conversation["runs"])
        ], class_="turns")
    return el(
        "header",
        el("h1", record.prompt, class_="prompt"),
        verdict_banner(record),
        el("details", el("summary", "System prompt"), el("pre", settings.system)) if settings.system else None,
        el("dl", [el("div", el("dt", k), el("dd", v)) for k, v in facts], class_="facts"),
        el("p", ids, class_="ids"),
        turns,
        class_="run-head",
    )


def member_calls(record: RunRecord, round_: RoundRecord) -> list[CallRecord]:
    """The round's member calls, in the panel's order."""
    order = [split_count(spec)[0] for spec in record.settings.models]
    return sorted((c for c in round_.calls if c.role == "member"), key=lambda c: (
        order.index(c.model) if c.model in order else len(order), c.instance or 0))


def expected_members(record: RunRecord, number_: int) -> list[str]:
    """The members round ``number_`` asks, by name: every instance of the
    panel, less those that failed in an earlier round (never asked again)."""
    failed = {member_name(c) for r in record.rounds if r.number < number_
              for c in member_calls(record, r) if c.error and not c.cancelled}
    panel = [f"{model} #{i}" for model, count in map(split_count, record.settings.models) for i in range(1, count + 1)]
    return [name for name in panel if name not in failed]


def pending(record: RunRecord, round_: RoundRecord) -> list[str]:
    """The members round ``round_`` still waits for, by name."""
    if round_.verdict is not None:
        return []
    arrived = {member_name(c) for c in member_calls(record, round_)}
    return [name for name in expected_members(record, round_.number) if name not in arrived]


def audits_section(audits: list) -> Markup | None:
    """The run's judge audits (``llm consortium audit``): each one's flip
    rate, and the winner of each order the answers were judged in."""
    if not audits:
        return None
    from ...evaluation.audit import confidence_spread

    parts = [el("h2", "Judge audits")]
    head = el("tr", [el("th", h) for h in ("Order shown (Response A first)", "Winner", "Confidence")])
    for audit in audits:
        spread = confidence_spread(audit)
        if audit.flip_rate is None:
            result = "the winning answer could not be identified in any order"
        else:
            against = "the run's own" if audit.reference_from == "run" else "the most common"
            result = (f"the winner differed from {against} in {audit.flips} of {audit.judged} orders: flip rate "
                      f"{audit.flip_rate:.2f}, 95 % interval {interval(audit.interval)}")
        rows = [el("tr", el("td", ", ".join(s.order)),
                   el("td", f"failed: {s.error}" if s.error else ", ".join(s.winner or []) or "not identified"),
                   el("td", number(s.confidence), class_="num"),
                   class_="flipped" if s.winner and audit.reference and s.winner != audit.reference else None)
                for s in audit.shuffles]
        parts.append(el(
            "div",
            el("p", el("strong", f"{len(audit.shuffles)} order{'s' if len(audit.shuffles) != 1 else ''}, "
                                 f"{audit.method}, arbiter {audit.arbiter}"),
               f" ({short_time(audit.created)}): {result}",
               f"; {spread}" if spread else "",
               class_="notice" if audit.flip_rate else None),
            el("table", el("thead", head), el("tbody", rows), class_="audit"),
            class_="audit",
        ))
    return el("section", parts, class_="audits")


def round_section(record: RunRecord, round_: RoundRecord, current: bool) -> Markup:
    calls = round_.calls
    members = member_calls(record, round_)
    verdict = round_.verdict
    waiting = pending(record, round_) if current else []
    number_ = round_.number
    badges = agreement_badges(verdict)
    unreported = {f"{m.model} #{m.instance}" for m in round_.members if m.usage.unreported}
    tabs = el("div", [
        el("button", member_name(c), type="button", role="tab", class_="tab" + (" failed" if c.error else ""),
           aria_selected="true" if i == 0 else "false", data_tab=member_name(c))
        for i, c in enumerate(members)
    ], role="tablist", class_="tabs")
    panels = el("div", [member_panel(c, i, badges.get(member_name(c)), member_name(c) in unreported)
                        for i, c in enumerate(members)],
                el("p", "Waiting for ", ", ".join(waiting), "…", class_="waiting") if waiting else None,
                not_asked_line(round_),
                class_="panels")
    costs = [call.cost_usd for call in calls]
    priced = sum(c for c in costs if c is not None)
    summary = " · ".join(filter(None, [
        f"confidence {number(verdict.confidence)}" if verdict and verdict.confidence is not None else None,
        f"agreement {number(verdict.agreement)}" if verdict and verdict.agreement is not None else None,
        cost(None if None in costs else priced, priced, costs.count(None)),
    ]))
    return el(
        "section",
        el("h2", f"Round {number_} ", el("span", summary, class_="muted")),
        el("div", tabs, panels, class_="members", data_key=f"members-{number_}"),
        judgement(record.settings.method, round_, current and not waiting),
        raw_calls(calls, number_),
        class_="round", id=f"round-{number_}",
    )


def not_asked_line(round_: RoundRecord) -> Markup | None:
    """The members an adaptive panel never asked in this round (``--adaptive``), by name."""
    skipped = [f"{m.model} #{m.instance}" for m in round_.members if m.not_asked]
    if not skipped:
        return None
    return el("p", el("span", "not asked", class_="badge badge-not-asked"), " ", ", ".join(skipped),
              ": the adaptive panel stopped before them", class_="not-asked")


def agreement_badges(verdict) -> dict[str, Markup]:
    """Each grouped member's badge, by name, from the verdict's groups of
    equivalent answers (``details["agreement"]["groups"]``): "agrees" in the
    largest group, "dissents" in a smaller one, "split" in one of several
    largest; each says whom it answered alike with."""
    groups = (((verdict.details or {}).get("agreement") or {}).get("groups") or []) if verdict else []
    names = [[f"{m.get('model')} #{m.get('instance')}" for m in group] for group in groups if group]
    largest = max((len(group) for group in names), default=0)
    tied = sum(len(group) == largest for group in names) > 1
    badges = {}
    for group in names:
        kind = "dissents" if len(group) < largest else "split" if tied else "agrees"
        for name in group:
            others = [other for other in group if other != name]
            alike = f"with {', '.join(others)}" if others else "alone" if len(names) > 1 else None
            badges[name] = el("span", kind, f" · {alike}" if alike else None, class_=f"badge badge-{kind}")
    return badges


def member_name(call: CallRecord) -> str:
    return f"{call.model} #{call.instance}"


def member_panel(call: CallRecord, index: int, badge: Markup | None, unreported: bool) -> Markup:
    if call.error:
        badge = el("span", "failed", class_="badge badge-failed")
    elif call.cancelled:
        badge = el("span", "cancelled", class_="badge badge-cancelled")
    return el(
        "article",
        el("div", el("h3", member_name(call)), badge, class_="member-head"),
        el("p", call_facts(call, unreported), class_="meta"),
        el("p", call.error, class_="error") if call.error else None,
        el("p", "Cancelled (a quorum had answered, or the run was stopped)", class_="notice")
        if call.cancelled else None,
        tool_calls(call),
        el("div", markdown(call.text), class_="markdown") if call.text else None,
        role="tabpanel", class_="member" + (" active" if index == 0 else ""), data_panel=member_name(call),
    )


def tool_calls(call: CallRecord) -> Markup | None:
    """The tools a member called (llm -T) before it answered: each one's
    name and arguments, and its output or error, as text."""
    if not call.tool_calls:
        return None
    return el("details", el("summary", f"Tool calls ({len(call.tool_calls)})"), [
        el("div",
           el("code", tool.name, "(", json.dumps(tool.arguments, ensure_ascii=False), ")"),
           el("pre", tool.error, class_="error") if tool.error else el("pre", tool.output or ""),
           class_="tool-call")
        for tool in call.tool_calls
    ], class_="tool-calls", data_key=f"tools-{call.id}")


def call_facts(call: CallRecord, unreported: bool = False) -> str:
    """Seconds, tokens (unknown when the model reported none: not 0), cost, attempts."""
    attempts = call.attempts or 1
    if unreported or call.input_tokens is None:
        counted = "tokens unknown"
    else:
        input_tokens, output_tokens = call.input_tokens, call.output_tokens or 0
        counted = f"{input_tokens + output_tokens} tokens ({input_tokens} in, {output_tokens} out)"
    return " · ".join(filter(None, [
        f"{call.seconds or 0:.2f} s",
        counted,
        cost(call.cost_usd, None, None),
        f"{attempts} attempts" if attempts > 1 else None,
    ]))


def judgement(method: str | None, round_: RoundRecord, judging: bool) -> Markup | None:
    verdict = round_.verdict
    if verdict is None:
        return el("p", "The judge is at work…", class_="waiting") if judging else None
    return el(
        "div",
        method_details(method, verdict.details, round_.number),
        el("h3", "Synthesis"),
        el("p", "No verdict this round: no judge could be read and no answer has a majority.", class_="notice")
        if verdict.no_verdict else
        el("p", "No judge decided this round: the answer is the one most members gave.", class_="notice")
        if not verdict.parse_ok else None,
        el("div", markdown(verdict.synthesis), class_="markdown synthesis"),
        [el("div", el("h3", title), el("div", markdown(text), class_="markdown"), class_=key)
         for key, title, text in (("analysis", "Analysis", verdict.analysis), ("dissent", "Dissent", verdict.dissent))
         if text],
        el("div", el("h3", "Refinement areas"), el("ul", [el("li", area) for area in verdict.refinement_areas]),
           class_="refinement") if verdict.refinement_areas else None,
        class_="judgement",
    )


def method_details(method: str | None, details: dict, round_number: int) -> list:
    """What the run's method computed (its render hook's data,
    ``core.methods``): the vote's tally, the council's ranking with its
    intervals, notes; then every detail as JSON, on demand."""
    parts = []
    for item in render(method, details):
        if item["kind"] == "tally":
            parts.append(el("div", el("h3", item["title"]), tally_table(item["rows"]), class_=method))
        elif item["kind"] == "ranking":
            parts.append(el("div", el("h3", item["title"]), ranking_table(item["rows"]), class_=method))
        elif item["kind"] == "note":
            parts.append(el("p", f"{item['label']}: " if item.get("label") else None, item["text"], class_="notice"))
    if details:
        parts.append(el("details", el("summary", "All details (JSON)"),
                        el("pre", json.dumps(details, indent=2, default=str)), class_="details-json",
                        data_key=f"details-{round_number}"))
    return parts


def tally_table(tally: list[dict]) -> Markup:
    """The tally, most votes first, each answer's share as a bar."""
    total = sum(row["count"] for row in tally) or 1
    rows = [
        el("tr", el("td", row["answer"], class_="answer-text"), el("td", row["count"], class_="num"),
           el("td", el("meter", value=f"{row['count'] / total:.3f}", min="0", max="1"), class_="bar"),
           el("td", ", ".join(row.get("members") or []), class_="members"),
           el("td", row.get("note") or "", class_="note"),
           class_="winner" if row.get("winner") else None)
        for row in sorted(tally, key=lambda row: -row["count"])
    ]
    return scrolls(el("table", el("tbody", rows), class_="tally"))


def ranking_table(ranking: list[dict]) -> Markup:
    head = el("tr", [el("th", h) for h in ("Answer", "Member", "Borda score", "95 % interval", "Ballots")])
    rows = [
        el("tr", el("td", entry.get("label")), el("td", f"{entry.get('model')} #{entry.get('instance')}"),
           el("td", number(entry.get("score")), class_="num"),
           el("td", interval(entry.get("interval")), class_="num"),
           el("td", entry.get("ballots"), class_="num"))
        for entry in ranking
    ]
    return scrolls(el("table", el("thead", head), el("tbody", rows), class_="ranking"))


def interval(value) -> str:
    if not value or len(value) != 2 or None in value:
        return "-"
    return f"[{value[0]:.2f}, {value[1]:.2f}]"


def raw_calls(calls: list[CallRecord], round_number: int) -> Markup | None:
    if not calls:
        return None
    return el("details", el("summary", f"Raw prompts and replies ({len(calls)} calls)"), [
        el("div",
           el("h4", call.role, " ", member_name(call)),
           el("details", el("summary", "Prompt"), el("pre", call.prompt or ""), data_key=f"prompt-{call.id}"),
           el("pre", call.text or call.error or "", class_="reply"),
           class_="raw-call")
        for call in calls
    ], class_="raw", data_key=f"raw-{round_number}")


def timeline(record: RunRecord) -> Markup | None:
    """Every call as a bar from its start to its end, on the run's clock."""
    calls = [(r.number, c) for r in record.rounds for c in r.calls]
    start = parse_time(record.started)
    if not calls or start is None:
        return None
    spans = []
    for number_, call in calls:
        end = parse_time(call.created)
        if end is None:
            continue
        end_s = (end - start).total_seconds()
        spans.append((max(0.0, end_s - (call.seconds or 0)), end_s, number_, call))
    if not spans:
        return None
    total = max(max(end for _, end, _, _ in spans), 0.001)
    row = 22
    bars = []
    for i, (begin, end, _, call) in enumerate(spans):
        state = "error" if call.error else "cancelled" if call.cancelled else call.role
        bars.append(el("g",
                       el("title", f"{call.role} {member_name(call)}: {begin:.2f}–{end:.2f} s"),
                       el("rect", x=f"{100 * begin / total:.2f}%", y=str(i * row + 3),
                          width=f"{max(0.4, 100 * (end - begin) / total):.2f}%", height=str(row - 6),
                          class_=f"bar {state}"),
                       class_="span"))
    svg = el("svg", bars, class_="timeline-chart", height=str(len(spans) * row), width="100%",
             role="img", aria_label="Timeline of the run's calls")
    table = scrolls(el("table", el("thead", el("tr", [el("th", h) for h in
                                               ("Round", "Role", "Model", "Start", "End", "Seconds", "Retries",
                                                "Outcome")])),
               el("tbody", [el("tr",
                               el("td", number_), el("td", call.role), el("td", member_name(call)),
                               el("td", f"{begin:.2f} s", class_="num"), el("td", f"{end:.2f} s", class_="num"),
                               el("td", f"{call.seconds or 0:.2f}", class_="num"),
                               el("td", max(0, (call.attempts or 1) - 1), class_="num"),
                               el("td", "error: " + excerpt(call.error, 80) if call.error
                                  else "cancelled" if call.cancelled else "ok"))
                            for begin, end, number_, call in spans]), class_="calls"))
    return el("section", el("h2", "Timeline"), el("div", el("div", svg, class_="chart"), table,
                                                 class_="timeline"), class_="timeline-section")


def continue_form(record: RunRecord, conversation: dict | None, configs: list[str], csrf: str) -> Markup | None:
    """Continue the run's llm conversation: only a run whose answer llm logged has one."""
    if not conversation or not configs:
        return None
    # The run's own consortium; a run of no saved one asks the reader to choose (never another, silently).
    own = record.name if record.name in configs else None
    return el("section", el("h2", "Continue the conversation"), el(
        "form", ask_fields(configs, own, csrf, "", choose=own is None),
        el("input", type="hidden", name="after", value=record.run_id),
        el("button", "Continue", type="submit"), method="post", action="/ask", class_="ask",
    ), class_="continue")


# Asking


def ask_page(configs: list[str], csrf: str, *, chosen: str | None = None, prompt: str = "",
             error: str | None = None) -> Markup:
    if not configs:
        body = el("p", "No saved consortium yet. Save one, for example: ",
                  el("code", "llm consortium save team -m MODEL_A -m MODEL_B --arbiter MODEL_C"), class_="empty")
    else:
        body = el("form", ask_fields(configs, chosen, csrf, prompt), el("button", "Ask", type="submit"),
                  method="post", action="/ask", class_="ask")
    return layout("Ask", frag(el("h1", "Ask a consortium"),
                              el("p", error, class_="error", role="alert") if error else None, body))


def ask_fields(configs: list[str], chosen: str | None, csrf: str, prompt: str, choose: bool = False) -> Markup:
    """The consortium and prompt fields; ``choose``: no consortium chosen
    until the reader picks one (the form cannot be sent before)."""
    return frag(
        el("input", type="hidden", name="csrf", value=csrf),
        el("label", "Consortium ", el("select",
                                      el("option", "Choose a consortium", value="", selected=True) if choose else None,
                                      [el("option", name, value=name, selected=name == chosen) for name in configs],
                                      name="consortium", required=choose)),
        el("label", "Prompt", el("textarea", prompt, name="prompt", rows="4", required=True), class_="prompt-field"),
    )


def error_page(title: str, message: str) -> Markup:
    """A page saying what went wrong, with the way back."""
    return layout(title, el(
        "section",
        el("h1", title),
        el("p", message),
        el("p", el("a", "Back to the runs", href="/"), " · ", el("a", "Ask a consortium", href="/ask")),
        class_="error-page",
    ))


# Formatting


def agreement(run) -> str:
    """ "2 of 3 agree, 3 of 3 answered" (``outcome``) for a runs list row;
    the measured agreement of a run recorded before the counts existed."""
    if not run.members:
        return number(run.agreement)
    return counts_text(run.agreeing, run.answered, run.members, run.not_asked, run.decisive)


def notes(outcome: OutcomeRecord) -> list[str]:
    """Every condition behind the run's status, as recorded; a run recorded
    before the notes existed shows why it stopped early, if it did."""
    if outcome.notes:
        return outcome.notes
    return [f"Stopped early: {outcome.stopped_because}"] if outcome.stopped_because else []


def status_badge(status: str) -> Markup:
    return el("span", status, class_=f"status status-{status}")


def number(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def excerpt(text: str, length: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def parse_time(text: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def short_time(text: str | None) -> str:
    moment = parse_time(text)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def duration(started: str | None, finished: str | None, status: str) -> str:
    begin = parse_time(started)
    end = parse_time(finished) or (datetime.now(timezone.utc) if status not in FINISHED else None)
    if begin is None or end is None:
        return "-"
    seconds = (end - begin).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
