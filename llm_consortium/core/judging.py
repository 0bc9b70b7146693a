"""Judging one round: a round's answers in, a judgement out.

``judge_round`` is the one entry the engine, ``eval`` and ``rejudge`` use.
What it needs from outside is passed in:

* ``call``, the function that makes a model call (a ``Caller``): the engine
  and ``rejudge`` pass ``real_call``, ``eval`` a caching one;
* ``emit(event, *args)``, told of each judging call as ``Observer`` events
  (``call_started``, ``arbiter_chunk``, ``answer_chunk``, ``call_finished``),
  with the run and the round number first;
* ``limiter``, the semaphore that bounds the calls in flight.

A ``Caller`` is ``async call(handle, *, role, instance, **kwargs) ->
CallOutcome`` where ``kwargs`` are ``calls.call_model``'s (``prompt``,
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
from .calls import CallOutcome, call_model
from .errors import is_context_overflow
from .outcome import panel_size
from .parsing import SynthesisReader, parse_arbiter, parse_confidence, read_sections
from .results import Judgement, MemberResult
from .stopping import last_round

Caller = Callable[..., Awaitable[CallOutcome]]
Emit = Callable[..., None]


async def real_call(handle, *, role: str, instance: int, **kwargs) -> CallOutcome:
    """The model call itself (``calls.call_model``); ``role`` and ``instance`` are only names."""
    return await call_model(handle, **kwargs)


def no_events(event: str, *args) -> None:
    """An ``emit`` that tells no one."""


async def judge_round(run, number: int, answered: list[MemberResult], *, limiter, call: Caller = real_call,
                      emit: Emit = no_events, method: str | None = None) -> tuple[Judgement, str]:
    """Judge round ``number`` of ``run`` on the members' ``answered`` results
    with ``method`` (the run's own by default): (the judgement, the arbiter's
    raw reply, "" when none was asked; a decisive --adaptive panel asks
    none, see ``adaptive.decided``). Its calls' usage is added to the run's
    and to its last round's ``judging_usage``."""
    from .adaptive import decided
    from .methods import judge

    panel = Panel(run, number, answered, limiter=limiter, call=call, emit=emit)
    method = method or run.config.method
    # A decisive adaptive panel whose answer is a short answer needs no judge (``adaptive``).
    return decided(method, panel) or await judge(method, panel)


class Panel:
    """What a judging method may use in one round: the answers, and calls
    to the arbiter or other models that are counted, limited and recorded
    like every other call of the run."""

    def __init__(self, run, number: int, answered: list[MemberResult], *, limiter, call: Caller, emit: Emit):
        self.run = run
        self.config = run.config
        self.number = number
        self.answered = answered
        # n, what agreement and vote shares divide by: the round's members
        # less those a quorum cancelled (a failed member agrees with no one).
        self.size = panel_size(run.rounds[-1].members) if run.rounds else len(answered)
        self._limiter = limiter
        self._call = call
        self._emit = emit

    async def call(self, model: str, prompt: str, *, role: str, instance: int = 1, on_chunk=None,
                   answer: SynthesisReader | None = None) -> CallOutcome:
        """One call of any of the run's models; ``role`` names it in the records
        and in the events, also when the run is cancelled while it is in flight.
        ``answer``: the reader that streams the synthesis of its reply (``answer_reader``)."""
        outcome = CallOutcome()

        def on_attempt(_):
            if answer is not None:
                answer.restart()
            self._emit("call_started", self.run, self.number, role, model, instance)

        if answer is not None:
            on_chunk = self._streaming(answer, outcome, on_chunk)

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

    def _streaming(self, answer: SynthesisReader, outcome: CallOutcome, on_chunk):
        """``on_chunk`` that also passes the synthesis on as it is written
        (``answer_chunk``), until the stream breaks: a reply asked for again
        unstreamed (``calls``) arrives whole after the part already read."""
        def told(chunk: str) -> None:
            if on_chunk:
                on_chunk(chunk)
            if outcome.broken_stream:
                answer.stop()
            text = answer.feed(chunk)
            if text:
                self.run.streamed += text
                self._emit("answer_chunk", self.run, self.number, text)

        return told

    def answer_reader(self) -> SynthesisReader | None:
        """The reader that streams this judging call's synthesis, when the
        run streams its answer (``Run.stream``; never under a schema, whose
        answer is the JSON rewritten) and none has been streamed yet."""
        run = self.run
        if not run.stream or run.schema is not None or run.streamed:
            return None
        return SynthesisReader(self.is_last_round)

    def is_last_round(self, reply: str) -> bool:
        """Whether the reply so far, up to its ``<synthesis>``, shows this is
        the run's last round (``stopping.last_round``): the fields the stop
        rule reads have arrived, the confidence, and the groups when it
        reads agreement, and meet it (or this is the last round allowed)."""
        from .agreement import measure, short_answers

        sections = read_sections(reply)
        confidence = parse_confidence(sections["confidence"])
        if confidence is None:
            return False
        agreement = None
        if self.config.stop_on != "arbiter":
            if not sections["groups"]:
                return False
            agreement = measure(self.answered, short_answers(self.answered, None), reply, self.size).share
        return last_round(self.config, self.number, confidence, agreement)

    def _withdraws(self, why: str) -> None:
        """The reply whose synthesis was streamed is not used: say why, once."""
        if self.run.streamed and self.run.stream_problem is None:
            self.run.stream_problem = why

    def _record(self, model: str, prompt: str, role: str, instance: int, outcome: CallOutcome) -> None:
        self.run.usage.add(outcome.usage)
        self.run.rounds[-1].judging_usage.add(outcome.usage)
        self._emit("call_finished", self.run, self.number, role, model, instance, outcome, prompt)

    async def arbitrate(self, prompt: str) -> tuple[Judgement, str]:
        """Ask the arbiter; its reply is read as the original plugin's XML.

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
        problem = None
        for reminded in (False, True):
            if reminded:  # once more, reminded of the format and of what was wrong
                outcome = await self._ask_arbiter(prompt + prompts.reminder(problem))
            if outcome.error:
                self._withdraws(f"the arbiter failed: {outcome.error}")
                return await members_verdict(self, f"the arbiter failed: {outcome.error}", "")
            judgement = parse_arbiter(outcome.text, material=self.material())
            problem = self.problem(judgement)
            if not problem:
                break
            self._withdraws(f"the arbiter's reply could not be used: {problem}")
        if not problem:
            if self.run.schema is not None:
                judgement.synthesis = json.dumps(schemas.read_json(judgement.synthesis), ensure_ascii=False)
            return judgement, outcome.text
        if judgement.parse_ok:  # readable, but not in the schema even after a reminder
            reason = schemas.problem(judgement.synthesis, self.run.schema)
            raise ConsortiumError(f"The arbiter's answer does not match the schema: {reason}")
        return await members_verdict(self, "the arbiter's reply could not be read, even after a reminder "
                                           "of the format", outcome.text)

    def problem(self, judgement: Judgement) -> str | None:
        """What is wrong with a judgement the arbiter wrote, or None."""
        if not judgement.parse_ok:
            return judgement.notes[-1]  # why, as parse_arbiter words it
        if self.run.schema is not None:
            wrong = schemas.problem(judgement.synthesis, self.run.schema)
            if wrong:
                return prompts.NOT_IN_SCHEMA.substitute(wrong=wrong)
        return None

    def material(self) -> list[str]:
        """What the arbiter was shown that the person asking and the members
        wrote (the answers as forwarded): a verdict may quote it, even where
        it reads like the prompt's instructions (``parse_arbiter``)."""
        return [self.run.prompt, self.run.system or "", self.run.conversation,
                *(prompts.excerpt(member.text) for member in self.answered)]

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
            answer=self.answer_reader(),
        )


async def members_verdict(panel: Panel, reason: str, raw: str) -> tuple[Judgement, str]:
    """The answer a strict majority of the members gave, when no judge
    could be read (``reason`` says why; ``raw`` is the judge's reply, if
    any): (the judgement, the reply its groups were read from).

    The answers are grouped by their short answers where those compare
    exactly (``agreement.exact_enough``); otherwise the arbiter is asked
    once, with a short prompt, only which answers agree, and if that fails
    too each answer is a group by its normalised text. This is the grouping
    ``agreement.measure`` reads from the reply returned, so the agreement
    shown is the one that decided.

    An answer wins only with more than half of the members (failed ones
    count as agreeing with no one, those a quorum cancelled not at all):
    one of three answering alike is not an answer. Under a schema, only a
    valid answer wins. With no such majority there is no verdict: no
    answer, and every distinct answer with the members who gave it.
    """
    from .agreement import (
        answer_key, described, exact_enough, exact_groups, measure, short_answers,
    )

    answered = panel.answered
    schema = panel.run.schema
    members = panel.size
    extracted = short_answers(answered, schema)
    keys = [answer_key(m.text, a) for m, a in zip(answered, extracted)]
    if len(answered) > 1 and not exact_enough(keys, extracted):
        prompt = prompts.grouping_prompt(panel.run.prompt, panel.answer_texts(), panel.run.fence)
        outcome = await panel.call(panel.config.arbiter, prompt, role="arbiter")
        raw = "" if outcome.error else outcome.text
    grouped = measure(answered, extracted, raw, members).groups or exact_groups(keys)
    groups = sorted(described(answered, extracted, grouped, schema), key=lambda g: -len(g.members))
    largest = max((g for g in groups if g.problem is None), key=lambda g: len(g.members), default=None)
    if largest is not None and len(largest.members) * 2 > members:
        share = len(largest.members) / members
        return Judgement(
            synthesis=largest.answer,
            confidence=share,
            analysis=f"{len(largest.members)} of {members} members gave this answer; {reason}.",
            parse_ok=False,
            agreement=share,
            fallback=reason,
        ), raw
    most = max((len(g.members) for g in groups), default=0)
    return Judgement(
        confidence=0.0,
        analysis=f"No verdict: {reason}, and no answer was given by more than half of the {members} members "
                 f"(at most {most}).",
        parse_ok=False,
        fallback=reason,
        no_verdict=True,
        candidates=[{"answer": g.answer, "members": g.names(answered)} for g in groups],
    ), raw
