"""The viewer's pages, as HTML built with ``html.el`` (escaped by construction).

A run's page reads a ``record.RunRecord`` (``store.load_run``), whichever
version recorded the run; the runs list reads ``store.list_runs``' rows
(``store.RunRow``), None where a run recorded by an older version lacks a column.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from ...core.config import split_count
from ...core.outcome import STATUSES, counts_text
from ...core.methods import render
from ...core.record import CallRecord, OutcomeRecord, RoundRecord, RunRecord
from ..display import cost
from .html import Markup, el, frag, markdown

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
           el("nav", el("a", "llm-consortium", href="/", class_="brand"),
              el("a", "Runs", href="/"), el("a", "Ask", href="/ask")),
           el("main", body, data_live=live)),
        lang="en",
    ))


# The runs list


def runs_page(runs: list[dict], facets: dict[str, list[str]], filters: dict[str, str]) -> Markup:
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
               el("td", f"{r.tokens:,}", class_="num"),
               el("td", cost(r.cost_usd, r.priced_usd, r.unpriced_calls), class_="num"),
               el("td", duration(r.started, r.finished, r.status), class_="num"),
               data_run=r.id)
            for r in runs
        ]), class_="runs")
    elif any(filters.values()):
        table = el("p", "No run matches these filters. ", el("a", "Show all runs", href="/"), class_="empty")
    else:
        table = el("p", "No runs recorded yet. Run a consortium (llm consortium run \"…\", or llm -m NAME) "
                        "or ", el("a", "ask one here", href="/ask"), ".", class_="empty")
    return layout("Runs", frag(el("h1", "Runs"), form, table))


# A run's page


def run_page(record: RunRecord, conversation: dict | None, configs: list[str], csrf: str) -> Markup:
    live = f"/runs/{record.run_id}/events" if record.outcome.status not in FINISHED else None
    return layout(excerpt(record.prompt or "Run", 60),
                  el("div", run_body(record, conversation, configs, csrf), id="run"), live=live)


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
        el("p", "Waiting for the members' first answers…", class_="waiting") if running and not rounds else None,
        timeline(record),
        continue_form(record, conversation, configs, csrf) if not running else None,
    )


def run_header(record: RunRecord, conversation: dict | None) -> Markup:
    settings, outcome, verdict = record.settings, record.outcome, record.verdict
    facts = [
        ("Status", status_badge(outcome.status)),
        ("Consortium", record.name or "unsaved"),
        ("Method", settings.method or "-"),
        ("Members", ", ".join(settings.models)),
        ("Arbiter", settings.arbiter or "-"),
        ("Confidence", number(verdict.confidence if verdict else None)),
        ("Agreement", counts_text(outcome.agreeing, outcome.answered, outcome.members, outcome.not_asked,
                                  outcome.decisive) if outcome.members
         else number(verdict.agreement if verdict else None)),
        ("Rounds", record.iterations),
        ("Tokens", f"{record.usage.total:,}"),
        ("Cost", cost(record.usage.cost_usd, round(record.usage.cost, 8), record.usage.unpriced)),
        ("Duration", duration(record.started, record.finished, outcome.status)),
        ("Started", short_time(record.started)),
    ]
    ids = [el("span", "Run ", el("code", record.run_id, class_="run-id")),
           el("span", el("code", f"llm consortium inspect {record.run_id[:8]}"))]
    if conversation:
        ids.append(el("span", "In llm logs: ", el("code", f"llm logs --cid {conversation['id']}",
                                                    class_="llm-cid")))
    elif outcome.status not in FINISHED:
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
        el("details", el("summary", "System prompt"), el("pre", settings.system)) if settings.system else None,
        el("dl", [frag(el("dt", k), el("dd", v)) for k, v in facts], class_="facts"),
        el("p", ids, class_="ids"),
        turns,
        class_="run-head",
    )


def round_section(record: RunRecord, round_: RoundRecord, current: bool) -> Markup:
    calls = round_.calls
    specs = record.settings.models
    order = [split_count(spec)[0] for spec in specs]
    members = sorted((c for c in calls if c.role == "member"), key=lambda c: (
        order.index(c.model) if c.model in order else len(order), c.instance or 0))
    expected = sum(split_count(spec)[1] for spec in specs)
    verdict = round_.verdict
    waiting = expected - len(members) if current and verdict is None else 0
    number_ = round_.number
    tabs = el("div", [
        el("button", member_name(c), type="button", role="tab", class_="tab" + (" failed" if c.error else ""),
           aria_selected="true" if i == 0 else "false", data_tab=member_name(c))
        for i, c in enumerate(members)
    ], role="tablist", class_="tabs")
    panels = el("div", [member_panel(c, i) for i, c in enumerate(members)],
                el("p", f"Waiting for {waiting} more member{'s' if waiting != 1 else ''}…", class_="waiting")
                if waiting > 0 else None, class_="panels")
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
        judgement(record.settings.method, round_, current and waiting <= 0),
        raw_calls(calls, number_),
        class_="round", id=f"round-{number_}",
    )


def member_name(call: CallRecord) -> str:
    return f"{call.model} #{call.instance}"


def member_panel(call: CallRecord, index: int) -> Markup:
    return el(
        "article",
        el("h3", member_name(call)),
        el("p", call_facts(call), class_="meta"),
        el("p", call.error, class_="error") if call.error else None,
        el("p", "Cancelled (a quorum had answered, or the run was stopped)", class_="notice")
        if call.cancelled else None,
        el("div", markdown(call.text), class_="markdown") if call.text else None,
        role="tabpanel", class_="member" + (" active" if index == 0 else ""), data_panel=member_name(call),
    )


def call_facts(call: CallRecord) -> str:
    attempts = call.attempts or 1
    input_tokens, output_tokens = call.input_tokens or 0, call.output_tokens or 0
    return " · ".join(filter(None, [
        f"{call.seconds or 0:.2f} s",
        f"{input_tokens + output_tokens} tokens ({input_tokens} in, {output_tokens} out)",
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
    return el("table", el("tbody", rows), class_="tally")


def ranking_table(ranking: list[dict]) -> Markup:
    head = el("tr", [el("th", h) for h in ("Answer", "Member", "Borda score", "95 % interval", "Ballots")])
    rows = [
        el("tr", el("td", entry.get("label")), el("td", f"{entry.get('model')} #{entry.get('instance')}"),
           el("td", number(entry.get("score")), class_="num"),
           el("td", interval(entry.get("interval")), class_="num"),
           el("td", entry.get("ballots"), class_="num"))
        for entry in ranking
    ]
    return el("table", el("thead", head), el("tbody", rows), class_="ranking")


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
    table = el("table", el("thead", el("tr", [el("th", h) for h in
                                               ("Round", "Role", "Model", "Start", "End", "Seconds", "Retries",
                                                "Outcome")])),
               el("tbody", [el("tr",
                               el("td", number_), el("td", call.role), el("td", member_name(call)),
                               el("td", f"{begin:.2f} s", class_="num"), el("td", f"{end:.2f} s", class_="num"),
                               el("td", f"{call.seconds or 0:.2f}", class_="num"),
                               el("td", max(0, (call.attempts or 1) - 1), class_="num"),
                               el("td", "error: " + excerpt(call.error, 80) if call.error
                                  else "cancelled" if call.cancelled else "ok"))
                            for begin, end, number_, call in spans]), class_="calls")
    return el("section", el("h2", "Timeline"), el("div", el("div", svg, class_="chart"), table,
                                                 class_="timeline"), class_="timeline-section")


def continue_form(record: RunRecord, conversation: dict | None, configs: list[str], csrf: str) -> Markup | None:
    """Continue the run's llm conversation: only a run whose answer llm logged has one."""
    if not conversation or not configs:
        return None
    default = record.name if record.name in configs else configs[0]
    return el("section", el("h2", "Continue the conversation"), el(
        "form", ask_fields(configs, default, csrf, ""), el("input", type="hidden", name="after", value=record.run_id),
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


def ask_fields(configs: list[str], chosen: str | None, csrf: str, prompt: str) -> Markup:
    return frag(
        el("input", type="hidden", name="csrf", value=csrf),
        el("label", "Consortium ", el("select", [el("option", name, value=name, selected=name == chosen)
                                                 for name in configs], name="consortium")),
        el("label", "Prompt", el("textarea", prompt, name="prompt", rows="4", required=True), class_="prompt-field"),
    )


def error_page(title: str, message: str) -> Markup:
    return layout(title, frag(el("h1", title), el("p", message, class_="error")))


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
