"""Judging one round: a round's answers in, a judgement out.

``judge_round`` is the one entry the engine, ``eval`` and ``rejudge`` use.
What it needs from outside is passed in:

* ``call``, the function that makes a model call (a ``Caller``): the engine
  and ``rejudge`` pass ``real_call``, ``eval`` a caching one;
* ``emit(event, *args)``, told of each judging call as ``Observer`` events
  (``call_started``, ``arbiter_chunk``, ``call_finished``), with the run
  and the round number first;
* ``limiter``, the semaphore that bounds the calls in flight.

A ``Caller`` is ``async call(handle, *, role, instance, **kwargs) ->
CallOutcome`` where ``kwargs`` are ``members.call_model``'s (``prompt``,
``system``, ``timeout``, ``limiter``, ``outcome`` ...), and ``role``
("member", "arbiter", "reviewer") and ``instance`` name the call, so that a
caching caller can tell two samples of one model apart. It fills the
``outcome`` it is given, or returns another (a cached one).
"""

from __future__ import annotations

import json
from typing import Awaitable, Callable

from . import prompts, schemas
from .budget import BudgetStop, reserve
from .config import ConsortiumError
from .members import CallOutcome, call_model, is_context_overflow
from .parsing import parse_arbiter
from .results import Judgement, MemberResult

Caller = Callable[..., Awaitable[CallOutcome]]
Emit = Callable[..., None]


async def real_call(handle, *, role: str, instance: int, **kwargs) -> CallOutcome:
    """The model call itself (``members.call_model``); ``role`` and ``instance`` are only names."""
    return await call_model(handle, **kwargs)


def no_events(event: str, *args) -> None:
    """An ``emit`` that tells no one."""


async def judge_round(run, number: int, answered: list[MemberResult], *, limiter, call: Caller = real_call,
                      emit: Emit = no_events, method: str | None = None) -> tuple[Judgement, str]:
    """Judge round ``number`` of ``run`` on the members' ``answered`` results
    with ``method`` (the run's own by default): (the judgement, the arbiter's
    raw reply, "" when none was asked). Its calls' usage is added to the run's
    and to its last round's ``judging_usage``."""
    from .methods import judge

    panel = Panel(run, number, answered, limiter=limiter, call=call, emit=emit)
    return await judge(method or run.config.method, panel)


class Panel:
    """What a judging method may use in one round: the answers, and calls
    to the arbiter or other models that are counted, limited and recorded
    like every other call of the run."""

    def __init__(self, run, number: int, answered: list[MemberResult], *, limiter, call: Caller, emit: Emit):
        self.run = run
        self.config = run.config
        self.number = number
        self.answered = answered
        self._limiter = limiter
        self._call = call
        self._emit = emit

    async def call(self, model: str, prompt: str, *, role: str, instance: int = 1, on_chunk=None) -> CallOutcome:
        """One call of any of the run's models; ``role`` names it in the records
        and in the events, also when the run is cancelled while it is in flight."""
        outcome = CallOutcome()

        def on_attempt(_):
            self._emit("call_started", self.run, self.number, role, model, instance)

        try:
            budget = reserve(self.run, model, prompt, role, self.number, self.answered)  # --max-cost: its max_tokens
        except BudgetStop as stop:
            if role != "reviewer":
                raise  # the arbiter is not called: the run ends (see ``budget``)
            outcome.error = str(stop)  # a ballot left out
            return outcome
        try:
            handle = self.run.handles[model]
            readable = [a for a in self.run.attachments if a.resolve_type() in (handle.model.attachment_types or ())]
            outcome = await self._call(
                handle,
                role=role,
                instance=instance,
                prompt=prompt,
                options=budget.options,
                attachments=readable,
                timeout=self.config.timeout,
                attempts=self.config.attempts,
                backoff=self.config.retry_backoff,
                limiter=self._limiter,
                on_attempt=on_attempt,
                on_chunk=on_chunk,
                outcome=outcome,
            )
        finally:
            budget.release()
            self._record(model, prompt, role, instance, outcome)
        return outcome

    def _record(self, model: str, prompt: str, role: str, instance: int, outcome: CallOutcome) -> None:
        self.run.usage.add(outcome.usage)
        self.run.rounds[-1].judging_usage.add(outcome.usage)
        self._emit("call_finished", self.run, self.number, role, model, instance, outcome, prompt)

    async def arbitrate(self, prompt: str) -> tuple[Judgement, str]:
        """Ask the arbiter; its reply is read as the seed's XML.

        A prompt too long for the arbiter's context window is asked again in
        its compact form. A reply without a synthesis is asked for once more
        with a reminder of the format. If the arbiter fails, or its reply
        still cannot be read, the members' own agreement decides
        (``members_verdict``): an arbiter that cannot judge never costs the
        answer the members agree on.
        """
        outcome = await self._ask_arbiter(prompt)
        if outcome.error and is_context_overflow(outcome.error):
            prompt = prompts.compact_arbiter_prompt(self.run.prompt, self.answer_texts(), self.run.fence)
            outcome = await self._ask_arbiter(prompt)
        if outcome.error:
            return members_verdict(self.answered, f"the arbiter failed: {outcome.error}"), ""
        judgement = parse_arbiter(outcome.text)
        problem = self.problem(judgement)
        if problem:
            outcome = await self._ask_arbiter(prompt + prompts.reminder(problem))
            if outcome.error:
                return members_verdict(self.answered, f"the arbiter failed: {outcome.error}"), ""
            judgement = parse_arbiter(outcome.text)
            problem = self.problem(judgement)
        if not problem:
            if self.run.schema is not None:
                judgement.synthesis = json.dumps(schemas.read_json(judgement.synthesis), ensure_ascii=False)
            return judgement, outcome.text
        if judgement.parse_ok:  # readable, but not in the schema even after a reminder
            reason = schemas.problem(judgement.synthesis, self.run.schema)
            raise ConsortiumError(f"The arbiter's answer does not match the schema: {reason}")
        return members_verdict(self.answered, "the arbiter's reply could not be read, even after a reminder "
                                              "of the format"), outcome.text

    def problem(self, judgement: Judgement) -> str | None:
        """What is wrong with a judgement the arbiter wrote, or None."""
        if not judgement.parse_ok:
            return "it had no <synthesis> block"
        if self.run.schema is not None:
            wrong = schemas.problem(judgement.synthesis, self.run.schema)
            if wrong:
                return f"its synthesis must be only a JSON value valid against the schema, but it was {wrong}"
        return None

    def answer_texts(self) -> list[tuple[str, str]]:
        """(neutral label, text) of each answer, in the order judges see them."""
        from .ballots import label

        return [(label(i), member.text) for i, member in enumerate(self.answered)]

    async def _ask_arbiter(self, prompt: str) -> CallOutcome:
        return await self.call(
            self.config.arbiter,
            prompt,
            role="arbiter",
            on_chunk=lambda chunk: self._emit("arbiter_chunk", self.run, self.number, chunk),
        )


def members_verdict(answered: list[MemberResult], reason: str) -> Judgement:
    """The answer most members gave, when no judge could decide.

    Answers are grouped by their extracted short answer where there is one,
    else by their whole text, case, spacing and final full stop aside
    (``agreement.answer_key``). The largest group wins (on a tie, the one
    whose first member comes first); its share of the answers is both the
    confidence and the agreement, and the answer is the full text of the
    group's first member.
    """
    from .answers import extract_answer
    from .agreement import answer_key, exact_groups

    groups = exact_groups([answer_key(m.text, extract_answer(m.text)) for m in answered])
    largest = [answered[i] for i in max(groups, key=len)]
    share = len(largest) / len(answered)
    return Judgement(
        synthesis=largest[0].text.strip(),
        confidence=share,
        analysis=f"{len(largest)} of {len(answered)} members gave this answer; {reason}.",
        parse_ok=False,
        agreement=share,
        fallback=reason,
    )
