"""The round loop: ask every member at once, let the arbiter judge, stop
when it is confident enough, otherwise ask again with its findings.

The engine never prints and never opens a database: it tells observers
what happens (``Observer``), and the CLI's display and the run store listen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from . import adaptive, calibrated, pricing, prompts, schemas
from .budget import BudgetStop, over_budget, with_max_tokens
from .config import ConsortiumConfig, ConsortiumConfigError, ConsortiumError, split_count
from .errors import PluginInterrupted, describe
from .handles import ModelHandle, check_keys, member_options, resolve_models
from .judging import Caller, judge_round, real_call
from .methods import member_instructions
from .outcome import WITHDRAWN
from .record import record_of, result_dict
from .responses import CHAIN_LIMIT, Ask, fit
from .results import Judgement, MemberResult, Usage
from .stopping import ended_by, should_stop, threshold_note


# The most members one run may have: past this, a typo such as model:1000
# would start a thousand calls.
MAX_MEMBERS = 64


@dataclass
class Round:
    number: int
    members: list[MemberResult]
    judgement: Judgement | None = None
    arbiter_raw: str = ""
    judging_usage: Usage = field(default_factory=Usage)  # arbiter, reviewers

    @property
    def usage(self) -> Usage:
        """The round's tokens and dollars: its members and its judging."""
        usage = Usage()
        for member in self.members:
            usage.add(member.usage)
        usage.add(self.judging_usage)
        return usage


@dataclass
class Run:
    """One run's state: what was asked, each round so far, the totals."""

    config: ConsortiumConfig
    prompt: str
    system: str | None
    conversation: str
    history: list
    handles: dict[str, ModelHandle]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished: datetime | None = None
    rounds: list[Round] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    fence: str = field(default_factory=prompts.new_fence)
    # Members that failed (an error, not a quorum cancellation), with why:
    # they are not asked again in later rounds of this run.
    dropped: dict[tuple[str, int], str] = field(default_factory=dict)
    # Each member model's own options (-o), by model id.
    options: dict[str, dict] = field(default_factory=dict)
    # The JSON schema every answer must follow (--schema), and attachments (-a).
    schema: dict | None = None
    attachments: list = field(default_factory=list)
    # The tools members may call (llm -T, --functions); the arbiter never gets them.
    tools: list = field(default_factory=list)
    chain_limit: int = CHAIN_LIMIT  # most responses in a member's tool chain (llm --cl)
    # Why the run ended before its rounds were done (--max-cost), and a note
    # when its budget could be checked against only part of the cost.
    stopped_because: str | None = None
    budget_note: str | None = None
    # Under --max-cost: the max_tokens of this round's member calls, and the
    # most the judging calls in flight can cost (see ``budget``).
    reply_tokens: int | None = None
    reserved: float = 0.0
    parent_run_id: str | None = None  # the run whose member answers this one judged again (rejudge)
    # (status, error) once the run ended without a result: failed, cancelled, interrupted.
    failure: tuple[str, str] | None = None
    # What the person asking must be told that no status says (a hint about a server).
    notes: list[str] = field(default_factory=list)
    # Each round's stages under --adaptive, by round number (``adaptive.Staging``).
    stages: dict[int, "adaptive.Staging"] = field(default_factory=dict)
    # Whether the answer is streamed as the judge writes it (``answer_chunk``:
    # see ``judging.Panel.answer_reader``), what was, why the reply it came
    # from was not used (if it was not), and the note when the run's answer
    # does not begin with what was streamed (``settle_stream``).
    stream: bool = False
    streamed: str = ""
    stream_problem: str | None = None
    stream_withdrawn: str | None = None
    # The calibrated map of this consortium and method (``calibrated``), None when there is none.
    calibration: dict | None = None

    @property
    def members(self) -> list[tuple[str, int]]:
        """(model, instance) for every member; ``m:2`` or a repeat makes two."""
        return members_of(self.config.models, self.handles)

    def to_dict(self) -> dict:
        """The result dict, made from the run's record (``record``)."""
        return result_dict(record_of(self))

    @property
    def answer_round(self) -> Round | None:
        """The round whose judgement is the run's answer: the latest judged
        one (an earlier one when --max-cost left the latest unjudged)."""
        return next((r for r in reversed(self.rounds) if r.judgement), None)

    @property
    def last_judgement(self) -> Judgement | None:
        """The run's answer (``answer_round``'s judgement), None before any."""
        return self.answer_round.judgement if self.answer_round else None

    @property
    def p_right(self) -> float | None:
        """The answer's calibrated probability of being right; None without a map or a judgement."""
        judgement = self.last_judgement
        if self.calibration is None or judgement is None:
            return None
        return calibrated.p_right(self.calibration, judgement.agreement, judgement.confidence)

    def threshold_note(self, judgement: Judgement) -> str | None:
        """Why the stop rule's threshold was not reached, or None (see ``stopping``)."""
        if self.last_judgement is None or adaptive.decided_without_judge(self, self.answer_round.number):
            return None  # a decisive adaptive panel that needed no judge is its own stop rule
        ended = ended_by(len(self.rounds), self.config.max_iterations, self.stopped_because,
                         judgement.fallback is not None)
        return threshold_note(self.config.stop_on, self.config.confidence_threshold, judgement.confidence,
                              judgement.agreement, len(self.rounds), ended)


class ConsortiumOrchestrator:
    """Runs a consortium. ``await orchestrate(prompt)`` returns the result dict.

    Accepts the original plugin's keyword arguments (models, arbiter,
    confidence_threshold, max_iterations, system_prompt, ...) or a ready
    ``config``; any other ``ConsortiumConfig`` field may be passed too.
    ``call`` makes every model call of the run (see ``judging.Caller``):
    ``eval`` passes one that replays cached replies. ``given_models``: llm
    model objects the run may use that llm's registry does not list, found
    by their ``model_id`` (``handles.resolve_models``; the demo's).
    """

    def __init__(self, models=None, *, config: ConsortiumConfig | None = None, observers=(),
                 call: Caller = real_call, given_models=(), **settings):
        if config is None:
            if models is not None:
                settings["models"] = models
            config = ConsortiumConfig(**settings)
        elif models is not None or settings:
            raise TypeError("pass either config= or individual settings, not both")
        self.config = config
        self.observers = list(observers)
        self.call = call
        self.given_models = list(given_models)

    async def orchestrate(self, prompt: str, *, history: list | None = None, system: str | None = None) -> dict:
        """Run the consortium on ``prompt``.

        ``history`` is a list of ``llm.Message`` from earlier turns of a
        conversation (members receive it; the arbiter sees it as text).
        ``system`` overrides the configured system prompt for this call.
        """
        run = self.prepare(prompt, history=history, system=system)
        return await self.execute(run)

    def orchestrate_sync(self, prompt: str, **kwargs) -> dict:
        """``orchestrate`` for code without an event loop (or inside one)."""
        from .runner import run_coroutine

        return run_coroutine(self.orchestrate(prompt, **kwargs))

    def prepare(self, prompt: str, *, history: list | None = None, system: str | None = None,
                options: dict | None = None, schema: dict | None = None, attachments=(), tools=(),
                chain_limit: int | None = None, calibration: dict | None = None) -> Run:
        """Validate everything and resolve every model, calling none of them.

        ``schema``: members answer in it and the final answer must validate
        against it. ``attachments`` go to each member, and the arbiter, whose
        model reads their type; the others are told one was left out.
        ``tools`` (``llm.Tool`` objects) go to each member whose model can
        call them, through llm's tool chain; the others are told they had
        none. The arbiter judges the members' final answers, without tools.
        ``chain_limit`` caps the responses in one member's tool chain, as
        llm's ``--cl`` does (0: no limit; None: llm's default of 5).
        ``calibration``: the saved consortium's calibration, as stored
        (``calibrated.for_run`` picks the map that applies, if any); a
        ``min_p`` without one that applies is refused.

        ``options`` (``-o`` options the consortium does not define) go to
        every member whose model accepts them; not to the arbiter, whose
        reply must keep to its format (a member's temperature or token limit
        could break it), and which is often another provider's model.
        """
        if not prompt or not prompt.strip():
            raise ConsortiumConfigError("The prompt is empty")
        if schema is not None:
            schemas.check(schema)
        handles = resolve_models(self.config.models + [self.config.arbiter], self.given_models)
        members = sum(split_count(spec, set(handles))[1] for spec in self.config.models)
        if members > MAX_MEMBERS:
            raise ConsortiumConfigError(f"{members} members is more than the {MAX_MEMBERS} a run may have")
        if self.config.quorum and self.config.quorum > members:
            raise ConsortiumConfigError(f"quorum {self.config.quorum} is more than the {members} members")
        if self.config.arbiter not in handles:
            raise ConsortiumConfigError(f"The arbiter is a single model: {self.config.arbiter!r} is not one")
        fitted, why_not = calibrated.for_run(calibration, self.config.models, self.config.arbiter,
                                             self.config.method)
        if self.config.min_p is not None and fitted is None:
            raise ConsortiumConfigError(
                f"min p needs a calibrated consortium, and {why_not}: run llm consortium eval DATA "
                "--consortium NAME --calibrate"
            )
        check_keys(handles)
        if self.config.adaptive and self.config.quorum:
            raise ConsortiumConfigError("--adaptive and --quorum cannot be combined: each decides when to stop asking")
        if self.config.adaptive and self.config.embed:
            adaptive.check_embedding_model(self.config.embed)
        pricing.warm()
        member_ids = dict.fromkeys(split_count(spec, set(handles))[0] for spec in self.config.models)
        run = Run(
            config=self.config,
            prompt=prompt,
            system=system or self.config.system_prompt,
            conversation=render_conversation(history or []),
            history=list(history or []),
            handles=handles,
            options=member_options({m: handles[m] for m in member_ids}, options) if options else {},
            schema=schema,
            attachments=list(attachments),
            tools=list(tools),
            chain_limit=CHAIN_LIMIT if chain_limit is None else chain_limit,
            calibration=fitted,
        )
        refused = over_budget(run, 1)
        if refused:
            raise ConsortiumConfigError(refused)
        return run

    async def execute(self, run: Run, answers: list[tuple[MemberResult, str]] | None = None) -> dict:
        """Run it; with ``answers`` ((member result, the prompt it answered),
        from an earlier run), judge those in one round instead of asking
        the members (``rejudge``)."""
        self._emit("run_started", run)
        limiter = asyncio.Semaphore(self.config.max_concurrency)
        try:
            if answers is None:
                await self._rounds(run, limiter)
            else:
                await self._judge_given(run, answers, limiter)
        except ConsortiumError as exc:  # a plugin's KeyboardInterrupt too (PluginInterrupted): "interrupted"
            self._fail(run, "interrupted" if isinstance(exc, PluginInterrupted) else "failed", str(exc))
            exc.result = run.to_dict()
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._fail(run, "cancelled", "cancelled by the user")
            raise
        except BaseException as exc:  # a bug of ours or a plugin's, whatever its type: still leave a record
            self._fail(run, "failed", describe(exc))
            raise
        settle_stream(run)
        run.finished = datetime.now(timezone.utc)
        result = run.to_dict()
        self._emit("run_finished", run, result)
        return result

    def _fail(self, run: Run, status: str, error: str) -> None:
        run.finished = datetime.now(timezone.utc)
        run.failure = (status, error)
        settle_stream(run)
        self._emit("run_failed", run, status, error)

    async def _rounds(self, run: Run, limiter) -> None:
        config = self.config
        for number in range(1, config.max_iterations + 1):
            member_prompt = run.prompt
            if run.rounds:
                member_prompt = prompts.refine_prompt(run.prompt, number, run.rounds[-1].judgement)
            run.stopped_because = over_budget(run, number, member_prompt)
            if run.stopped_because:
                return  # with the last round's answer, the best so far
            self._emit("round_started", run, number)
            current = Round(number, await self._ask_members(run, number, member_prompt, limiter))
            if number in run.stages:  # --adaptive: its grouping calls between stages
                current.judging_usage.add(run.stages[number].usage)
            await self._judge(run, current, limiter)
            if run.stopped_because:
                return  # the judge was not called for budget: the answer is an earlier round's, if any
            if not current.judgement.parse_ok:
                return  # an arbiter that failed or cannot keep to the format won't do better in another round
            if number >= config.min_iterations and adaptive.decided_without_judge(run, number) \
                    or should_stop(config, current.judgement, number):
                return

    async def _judge_given(self, run: Run, answers: list[tuple[MemberResult, str]], limiter) -> None:
        """One round judged on answers given with the prompts they answered,
        not asked: no member is called for an answer (``rejudge``)."""
        self._emit("round_started", run, 1)
        for member, prompt in answers:
            self._emit("member_finished", run, 1, member, prompt)
        await self._judge(run, Round(1, [member for member, _ in answers]), limiter)

    async def _judge(self, run: Run, current: Round, limiter) -> None:
        """Add ``current`` to the run and judge its answers."""
        run.rounds.append(current)
        answered = [m for m in current.members if m.ok]
        if not answered:
            errors = "; ".join(f"{m.model}#{m.instance}: {m.error}" for m in current.members)
            raise ConsortiumError(f"Every member failed in round {current.number}: {errors}")
        try:
            current.judgement, current.arbiter_raw = await judge_round(
                run, current.number, answered, limiter=limiter, call=self.call, emit=self._emit
            )
        except BudgetStop as stop:  # the round stays unjudged (see ``budget``)
            run.stopped_because = str(stop)
            return
        self._emit("round_finished", run, current)

    async def _ask_members(self, run: Run, number: int, prompt: str, limiter) -> list[MemberResult]:
        """Every member still in the run (at once, or under --adaptive in
        stages: ``adaptive``). A member that fails is dropped for later rounds."""
        config = self.config
        # With a schema the answer is the JSON, so no <answer> block is asked for.
        instructions = None if run.schema is not None else member_instructions(config.method)
        ask = Ask(prompt, join_system(run.system, instructions), member_messages(run.history, run.system),
                  schema=run.schema, attachments=run.attachments, tools=run.tools, chain_limit=run.chain_limit)
        results: dict[tuple[str, int], MemberResult] = {
            key: MemberResult(model=key[0], instance=key[1], error=f"Not asked again: {reason}", attempts=0)
            for key, reason in run.dropped.items()
        }

        async def ask_some(keys: list[tuple[str, int]]) -> None:
            await self._ask_some(run, number, ask, limiter, results, keys)

        if config.adaptive:
            await adaptive.ask_in_stages(run, number, join_system(ask.system, prompt), results, ask_some,
                                         call=self.call, limiter=limiter, emit=self._emit)
        else:
            await ask_some([key for key in run.members if key not in run.dropped])
        return [results[key] for key in run.members]

    async def _ask_some(self, run: Run, number: int, ask: Ask, limiter, results: dict, keys: list) -> None:
        """``keys``' members at once, into ``results``; with a quorum, stop
        waiting once enough answered. Members of one server that cut each
        other off are asked again one at a time (``_one_at_a_time``)."""
        config = self.config
        prompt = ask.prompt
        broken_streams: set[tuple[str, int]] = set()  # members whose streamed reply came back empty or cut short
        tasks = {
            asyncio.create_task(self._ask_one(run, number, model, instance, ask, limiter, broken_streams)):
                (model, instance)
            for model, instance in keys
        }
        pending = set(tasks)
        quorum = config.quorum or len(run.members)
        reason, by_quorum = f"Cancelled: quorum of {quorum} reached", True
        started = time.perf_counter()
        try:
            while pending and sum(r.ok for r in results.values()) < quorum:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    results[tasks[task]] = member = task.result()
                    if member.error:
                        run.dropped[tasks[task]] = f"it failed in round {number} ({member.error})"
            await self._one_at_a_time(run, number, ask, limiter, results, broken_streams)
        except (asyncio.CancelledError, PluginInterrupted) as exc:
            ended = "interrupted" if isinstance(exc, PluginInterrupted) else "cancelled"
            reason, by_quorum = f"Cancelled: the run was {ended}", False
            raise
        finally:
            # Members still answering are stopped and recorded as cancelled,
            # whether a quorum was reached or the whole run was cancelled.
            seconds = round(time.perf_counter() - started, 3)
            for task in pending:
                task.cancel()
                model, instance = tasks[task]
                late = MemberResult(model=model, instance=instance, error=reason, seconds=seconds, cancelled=True,
                                    quorum_cancelled=by_quorum)
                results[tasks[task]] = late
                self._emit("member_finished", run, number, late, prompt)

    async def _one_at_a_time(self, run, number, ask: Ask, limiter, results: dict, broken_streams: set) -> None:
        """llama.cpp's interrupt pattern: several members of one server
        (``api_base``) whose streams came back empty or cut short in this
        round. Its server (llama-cpp-python's, by default) ends the request
        in flight when another arrives, so members asked at once cancel
        each other (each is asked again unstreamed first: see ``calls.call_model``).
        Those that still have no answer are asked again one at a time, and
        the run's notes say how to start the server so that it does not."""
        by_server: dict[str, list] = {}
        for key in run.members:
            base = getattr(run.handles[key[0]].model, "api_base", None)
            if key in broken_streams and base:
                by_server.setdefault(str(base), []).append(key)
        quorum = self.config.quorum or len(run.members)
        for base, keys in by_server.items():
            if len(keys) < 2:
                continue
            note = interrupt_note(base)
            if note not in run.notes:  # once a run, however many rounds see it
                run.notes.append(note)
            for key in keys:
                if results[key].ok or sum(r.ok for r in results.values()) >= quorum:
                    continue
                self._emit("member_retry", run, number, *key, results[key].error, 0.0)
                results[key] = member = await self._ask_one(run, number, *key, ask, limiter, set())
                if member.error:
                    run.dropped[key] = f"it failed in round {number} ({member.error})"
                else:
                    run.dropped.pop(key, None)

    async def _ask_one(self, run, number, model, instance, ask: Ask, limiter, broken_streams: set) -> MemberResult:
        ask = fit(run.handles[model], replace(ask, options=with_max_tokens(run, model, run.options.get(model))))
        outcome = await self.call(
            run.handles[model],
            role="member",
            instance=instance,
            **vars(ask),
            timeout=self.config.timeout,
            attempts=self.config.attempts,
            backoff=self.config.retry_backoff,
            limiter=limiter,
            on_chunk=lambda chunk: self._emit("member_chunk", run, number, model, instance, chunk),
            on_retry=lambda attempt, error, delay: self._emit("member_retry", run, number, model, instance, error, delay),
            on_tool_call=lambda call: self._emit("tool_called", run, number, model, instance, call),
        )
        member = MemberResult(
            model=model, instance=instance, text=outcome.text, error=outcome.error, seconds=round(outcome.seconds, 3),
            usage=outcome.usage, attempts=outcome.attempts, queued=round(outcome.queued, 3),
        )
        if outcome.broken_stream:
            broken_streams.add((model, instance))
        run.usage.add(outcome.usage)
        self._emit("member_finished", run, number, member, ask.prompt)
        return member

    def _emit(self, event: str, *args) -> None:
        for observer in self.observers:
            getattr(observer, event)(*args)


def settle_stream(run: Run) -> None:
    """Once the run has ended: if an answer was streamed and the run's answer
    does not begin with it (the judge's reply was rejected or cut, a later
    block or round replaced it, or there is no answer), the streamed text is
    withdrawn, and the run's notes say so and why."""
    if not run.streamed:
        return
    judgement = None if run.failure else run.last_judgement
    answer = judgement.synthesis if judgement and not judgement.no_verdict else None
    if answer is not None and answer.startswith(run.streamed):
        return
    why = run.stream_problem or ("the run ended with no answer" if answer is None
                                 else "the judge's final answer is not the one streamed")
    run.stream_withdrawn = f"{WITHDRAWN}: {why}"
    run.notes.append(run.stream_withdrawn)


def members_of(models: list[str], handles: dict) -> list[tuple[str, int]]:
    """(model, instance) for every member of ``models`` (resolved in ``handles``); ``m:2`` or a repeat makes two."""
    seen: dict[str, int] = {}
    members = []
    for spec in models:
        model, count = split_count(spec, set(handles))
        for _ in range(count):
            seen[model] = seen.get(model, 0) + 1
            members.append((model, seen[model]))
    return members


def interrupt_note(api_base: str) -> str:
    """The one-line hint for llama.cpp's interrupt pattern on ``api_base``."""
    from urllib.parse import urlsplit

    where = urlsplit(api_base).netloc.rpartition("@")[2] or api_base  # never a user:password@
    return (f"Members on {where} came back empty or cut short at once, as when llama.cpp's server "
            "cancels a request for each new one: start it with --interrupt_requests False")


def join_system(*parts: str | None) -> str | None:
    return "\n\n".join(p for p in parts if p) or None


def member_messages(history: list, system: str | None) -> list | None:
    """The message list members get on a continued conversation, else None.

    With ``messages=`` llm treats the list as authoritative, so the system
    prompt goes first in it as well as in ``system=``.
    """
    if not history:
        return None
    import llm

    turns = [m for m in history if m.role != "system"]
    if system:
        turns.insert(0, llm.system(system))
    return turns


def render_conversation(history: list) -> str:
    """Earlier turns as plain text for the arbiter's prompt."""
    lines = []
    for message in history:
        if message.role == "system":
            continue
        text = "".join(getattr(part, "text", "") or "" for part in message.parts).strip()
        if text:
            lines.append(f"[{message.role}]\n{text}")
    return "\n\n".join(lines)
