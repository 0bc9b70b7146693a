"""The work behind ``llm consortium eval`` (see ``evaluate`` for what it
measures and how): the reply cache, the caching caller, and the runs.
Imported only when an eval runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

from ..core.answers import extract_answer, is_correct, tally
from ..core.config import ConsortiumConfigError, ConsortiumError
from ..core.engine import ConsortiumOrchestrator, join_system, members_of
from ..core.families import same_family
from .evalreport import Problem, Row, best_member
from .evaluate import Item, field_hits, item_right
from ..core.judging import real_call
from ..core.calls import CallOutcome
from ..core.observer import Observer
from ..core.methods import answer, member_instructions
from ..core.methods.vote import MEMBER_INSTRUCTIONS
from ..core.pricing import priced
from ..core.responses import Ask, fit
from ..core.schemas import canonical
from ..core.results import MemberResult, Usage

EVERY_MEMBER_FAILED = "every member failed"
PROMPT_EXCERPT_CHARS = 60


class ReplyCache:
    """Model replies in SQLite, keyed by (model, what was asked, role:instance).

    Only successful replies are stored; tokens a model did not report are
    NULL. The file is a cache: it can be deleted at any time, at the cost of
    asking the models again.
    """

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        with self.conn:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS consortium_eval_replies (model TEXT, asked TEXT, call TEXT, "
                "text TEXT, input_tokens INTEGER, output_tokens INTEGER, seconds REAL, "
                "PRIMARY KEY (model, asked, call))"
            )

    def get(self, handle, asked: str, call: str):
        """The stored reply as a ``CallOutcome`` (0 attempts: no call made), priced now, or None."""
        row = self.conn.execute(
            "SELECT text, input_tokens, output_tokens, seconds FROM consortium_eval_replies "
            "WHERE model = ? AND asked = ? AND call = ?",
            (handle.model_id, asked, call),
        ).fetchone()
        if row is None:
            return None
        text, input_tokens, output_tokens, seconds = row
        usage = Usage(unreported=1, unpriced=1) if input_tokens is None else priced(
            handle.model, input_tokens, output_tokens)
        return CallOutcome(text, None, usage, seconds, attempts=0)

    def put(self, handle, asked: str, call: str, outcome) -> None:
        usage = outcome.usage
        tokens = (None, None) if usage.unreported else (usage.input, usage.output)
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO consortium_eval_replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (handle.model_id, asked, call, outcome.text, *tokens, outcome.seconds),
            )

    def close(self) -> None:
        self.conn.close()


class CachingCaller:
    """A ``judging.Caller`` that replays stored replies, makes (and stores)
    the others, and asks each distinct thing once per eval even when several
    runs ask it at the same time. Every call it makes waits for ``limiter``,
    the eval's bound on calls in flight, instead of the run's own."""

    def __init__(self, cache: ReplyCache, limiter: asyncio.Semaphore):
        self.cache = cache
        self.limiter = limiter
        self.replies: dict[tuple[str, str, str], asyncio.Task] = {}
        self.new_calls = 0
        self.failed_calls = 0

    async def __call__(self, handle, *, role: str, instance: int, prompt: str, system: str | None = None,
                       **kwargs):
        asked = prompt if system is None else f"{system}\n\n{prompt}"
        if kwargs.get("schema") is not None:  # a model that enforces the schema itself is asked more than its prompt
            asked += "\n\nschema: " + json.dumps(kwargs["schema"], sort_keys=True)
        key = (handle.model_id, asked, f"{role}:{instance}")
        if key not in self.replies:
            self.replies[key] = asyncio.ensure_future(
                self._reply(handle, asked, key[2], role=role, instance=instance, prompt=prompt, system=system,
                            **kwargs)
            )
        # Shielded: a run that stops waiting (a quorum) does not cancel the call other runs share.
        return await asyncio.shield(self.replies[key])

    async def _reply(self, handle, asked: str, call: str, **kwargs):
        outcome = self.cache.get(handle, asked, call)
        if outcome is not None:
            return outcome
        outcome = await real_call(handle, **{**kwargs, "limiter": self.limiter})
        self.new_calls += 1
        if outcome.error is None:
            self.cache.put(handle, asked, call, outcome)
        else:
            self.failed_calls += 1
        return outcome


class CallTimes(Observer):
    """An engine observer: one run's calls, and its critical path in seconds
    (per round: the slowest member, then the slowest reviewer, then each
    arbiter call in turn)."""

    def __init__(self):
        self.calls = 0
        self.rounds: dict[int, dict[str, list[float]]] = {}

    def _add(self, number: int, kind: str, seconds: float) -> None:
        self.calls += 1
        self.rounds.setdefault(number, {"member": [], "reviewer": [], "arbiter": []})[kind].append(seconds)

    def member_finished(self, run, number, member, prompt) -> None:
        self._add(number, "member", member.seconds)

    def call_finished(self, run, number, role, model, instance, outcome, prompt) -> None:
        self._add(number, "reviewer" if role == "reviewer" else "arbiter", outcome.seconds)

    @property
    def seconds(self) -> float:
        return sum(
            max(r["member"], default=0.0) + max(r["reviewer"], default=0.0) + sum(r["arbiter"])
            for r in self.rounds.values()
        )


class Evaluation:
    """Asks the members (or reads the cache), builds the baselines, then runs
    each method on each item, all through one caching caller. ``progress``,
    when given, is told ``update(what, done, total)`` as each item finishes
    (the command shows it)."""

    def __init__(self, config, handles, cache_path: Path, progress=None,
                 samples: int | None = None):
        self.config = config
        self.handles = handles
        self.progress = progress
        self.samples = samples
        # The eval's system prompt: the <answer> block is asked for in every method.
        self.system = join_system(config.system_prompt, MEMBER_INSTRUCTIONS)
        self.cache_path = cache_path
        self.member_names: list[str] = []
        self.caller: CachingCaller | None = None

    @property
    def new_calls(self) -> int:
        return self.caller.new_calls if self.caller else 0

    @property
    def failed_calls(self) -> int:
        return self.caller.failed_calls if self.caller else 0

    async def run(self, items: list[Item], methods: list[str]):
        """Every row, in order: the members, the Self-MoA baseline, the oracle, each method."""
        cache = ReplyCache(self.cache_path)  # opened here, on the event loop's thread, where it is used
        self.caller = CachingCaller(cache, asyncio.Semaphore(self.config.max_concurrency))
        try:
            members = members_of(self.config.models, self.handles)
            self.member_names = [model if instance == 1 else f"{model}#{instance}" for model, instance in members]
            answers = await self.each("answered", [
                asyncio.gather(*(self.answer(item, model, instance) for model, instance in members))
                for item in items
            ])
            rows = self.member_rows(items, answers)
            best = members[rows.index(best_member(rows))][0]
            self.samples = self.samples or len(members)
            rows.append(await self.self_moa(items, best))
            rows.append(self.oracle(items, answers))
            arbiter = self.config.arbiter
            models = [model for model, _ in members]
            family = same_family(arbiter, models, self.handles) if methods and arbiter in self.handles else []
            if set(family) >= set(models):
                family = []  # the whole panel is the arbiter's family: there is no other family's answer to choose
            for method in methods:
                row, chosen = await self.method_row(method, items)
                if family:
                    row.self_preference = self_preference(items, answers, chosen, arbiter, family)
                rows.append(row)
        finally:
            cache.close()
        return rows

    async def each(self, what: str, awaitables: list) -> list:
        """Await concurrently, in order, reporting progress as each finishes."""
        done = 0

        async def counted(awaitable):
            nonlocal done
            result = await awaitable
            done += 1
            if self.progress:
                self.progress.update(what, done, len(awaitables))
            return result

        return await asyncio.gather(*(counted(a) for a in awaitables))

    async def answer(self, item: Item, model: str, instance: int):
        """Sample ``instance`` of a member's first answer to ``item``: the
        call a run's first round makes, so the runs replay it."""

        config = self.config
        handle = self.handles[model]
        # A structured item is asked as a run asks it: in its schema, with no <answer> block.
        ask = fit(handle, Ask(item.prompt, config.system_prompt, schema=item.schema)) if item.schema is not None \
            else Ask(item.prompt, self.system)
        outcome = await self.caller(
            handle, role="member", instance=instance, prompt=ask.prompt, system=ask.system,
            **({"schema": ask.schema} if ask.schema is not None else {}),
            timeout=config.timeout, attempts=config.attempts, backoff=config.retry_backoff,
            limiter=self.caller.limiter, outcome=CallOutcome(),
        )
        return MemberResult(model=model, instance=instance, text=outcome.text, error=outcome.error,
                            seconds=round(outcome.seconds, 3), usage=outcome.usage, attempts=outcome.attempts)

    def member_rows(self, items: list[Item], answers) -> list:
        rows = [Row(name, "member") for name in self.member_names]
        for number, (item, item_answers) in enumerate(zip(items, answers), 1):
            for row, member in zip(rows, item_answers):
                row.correct.append(right(member, item))
                row.fields.append(fields_share(item, member.text if member.ok else None))
                spend(row, [member])
                if not member.ok:
                    note(row, number, item, "failed", member.error)
        return rows

    def oracle(self, items: list[Item], answers):
        """Right when any member is right; it costs every member's answer."""
        row = Row("oracle", "oracle")
        for number, (item, item_answers) in enumerate(zip(items, answers), 1):
            row.correct.append(any(right(m, item) for m in item_answers))
            spend(row, item_answers)
            if not any(m.ok for m in item_answers):
                note(row, number, item, "failed", EVERY_MEMBER_FAILED)
        return row

    async def self_moa(self, items: list[Item], model: str):
        """``model`` sampled ``self.samples`` times per item, its answers' plurality (a tie: no answer)."""
        row = Row(f"{model}×{self.samples}", "self-moa")
        sampled = await self.each("self-moa: sampled", [
            asyncio.gather(*(self.answer(item, model, k) for k in range(1, self.samples + 1))) for item in items
        ])
        for number, (item, answers) in enumerate(zip(items, sampled), 1):
            if item.structured:  # the plurality of the samples' objects, compared as JSON values
                texts = {canonical(m.text): m.text for m in answers if m.ok}
                winner = tally([canonical(m.text) if m.ok else None for m in answers]).winner
                row.correct.append(item_right(item, texts.get(winner), None))
                row.fields.append(fields_share(item, texts.get(winner)))
            else:
                winner = tally([extract_answer(m.text) if m.ok else None for m in answers]).winner
                row.correct.append(is_correct(winner, item.answer))
                row.fields.append(None)
            spend(row, answers)
            if not any(m.ok for m in answers):
                note(row, number, item, "failed", "every sample failed")
        return row

    async def method_row(self, method: str, items: list[Item]):
        """The method's row, and its answer to each item (``chosen``: (text, short), None with no answer)."""
        row = Row(method, "method")
        chosen = []
        runs = await self.each(f"{method}: ran", [self.whole_run(method, item) for item in items])
        for number, (item, (judgement, problem, run, times)) in enumerate(zip(items, runs), 1):
            text = judgement.synthesis if judgement is not None else None
            chosen.append(None if judgement is None else (text, answer(method, judgement)))
            row.correct.append(judgement is not None and item_right(item, text, answer(method, judgement)))
            row.fields.append(fields_share(item, text))
            row.confidence.append(judgement.confidence if judgement else None)
            row.agreement.append(judgement.agreement if judgement else None)
            usage = run.usage if run else Usage()  # no run: refused before any call
            row.rounds.append(len(run.rounds) if run else 0)
            row.cost.append(usage.cost_usd)
            row.seconds.append(times.seconds)
            row.calls += times.calls
            row.input_tokens += usage.input
            row.output_tokens += usage.output
            if problem:
                note(row, number, item, *problem)
        return row, chosen

    async def whole_run(self, method: str, item: Item):
        """One consortium run of ``method`` on ``item``, every round, through
        the caching caller: (its last judgement or None, None or (kind,
        reason) when it failed or fell back, the run, its ``CallTimes``)."""

        times = CallTimes()
        orchestrator = ConsortiumOrchestrator(config=replace(self.config, method=method), observers=[times],
                                              call=self.caller)
        # A method that gives the members instructions of its own (the vote: the <answer>
        # block) adds them itself; the others get the eval's in the system prompt.
        system = self.config.system_prompt if member_instructions(method) or item.schema is not None else self.system
        try:
            run = orchestrator.prepare(item.prompt, system=system, schema=item.schema)
        except ConsortiumConfigError as exc:  # --max-cost below the first round's estimate
            return None, ("failed", str(exc)), None, times
        # Derived from the item, so that every prompt of a replay is the same.
        run.run_id = digest(f"{method}\n{item.prompt}")[:32]
        run.fence = "FENCE-" + digest(f"fence\n{item.prompt}")[:16]
        try:
            await orchestrator.execute(run)
        except ConsortiumError as exc:
            return None, ("failed", str(exc)), run, times
        judgement = run.last_judgement
        if judgement is None:  # --max-cost left every round unjudged
            return None, ("failed", run.stopped_because), run, times
        return judgement, ("fallback", judgement.fallback) if judgement.fallback else None, run, times


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def right(member, item: Item) -> bool:
    return member.ok and item_right(item, member.text, extract_answer(member.text))


def fields_share(item: Item, text: str | None) -> float | None:
    """The share of a structured item's fields ``text`` gives right; None for another item."""
    if not item.structured:
        return None
    hits = field_hits(item, text)
    return sum(hits) / len(hits)


def spend(row, answers) -> None:
    """Add one item's member answers to ``row``: a call each, their tokens,
    their dollars (unknown if any is) and their seconds (at once: the slowest)."""
    costs = [m.usage.cost_usd for m in answers]
    row.cost.append(None if None in costs else sum(costs))
    row.seconds.append(max((m.seconds for m in answers), default=0.0))
    row.calls += len(answers)
    row.input_tokens += sum(m.usage.input for m in answers)
    row.output_tokens += sum(m.usage.output for m in answers)


def note(row, number: int, item: Item, kind: str, reason: str) -> None:
    """Item ``number`` failed (``kind`` "failed") or fell back ("fallback") in ``row``, because of ``reason``."""

    excerpt = " ".join(item.prompt.split())
    if len(excerpt) > PROMPT_EXCERPT_CHARS:
        excerpt = excerpt[:PROMPT_EXCERPT_CHARS].rstrip() + "…"
    row.problems.append(Problem(number, excerpt, kind, reason))



def self_preference(items: list[Item], answers, chosen: list, arbiter: str, family: list[str]) -> dict:
    """How often a method chose the answer of the arbiter's own family,
    against how often that answer was right (self-preference, arXiv
    2404.13076), on the items where there was a choice: a member of the
    arbiter's family gave an answer that another member did not.

    ``answers``: each item's member answers; ``chosen``: each item's
    (text, short answer) from the method, None when it had none. The gap is
    the choice rate less the right rate: above 0, the family is chosen more
    often than it is right."""
    picked = right_ = considered = 0
    for item, item_answers, choice in zip(items, answers, chosen):
        own = next((m for m in item_answers if m.model in family and m.ok), None)
        if own is None or choice is None:
            continue
        others = [m for m in item_answers if m.model not in family and m.ok]
        if not others or all(same_answer(item, own.text, m.text) for m in others):
            continue  # no choice to make
        considered += 1
        right_ += right(own, item)
        picked += same_answer(item, own.text, choice[0], choice[1])
    pick_rate = picked / considered if considered else None
    right_rate = right_ / considered if considered else None
    return {"arbiter": arbiter, "family": family, "items": considered, "chose_family": picked,
            "family_right": right_, "choice_rate": pick_rate, "right_rate": right_rate,
            "gap": None if not considered else pick_rate - right_rate}


def same_answer(item: Item, text: str, other: str | None, other_short: str | None = None) -> bool:
    """Whether two answers to ``item`` are one: the same JSON value for a
    structured item, else the same short answer (``other_short``, when the
    method gave one, for ``other``)."""
    if item.structured:
        return canonical(text) is not None and canonical(text) == canonical(other or "")
    short = other_short if other_short is not None else extract_answer(other or "")
    return is_correct(short, extract_answer(text) or "")
