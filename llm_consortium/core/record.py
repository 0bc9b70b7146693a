"""One run as one typed value: ``RunRecord -> RoundRecord -> MemberResult /
Verdict``, with its usage and cost, timings, outcome and settings.

The engine's ``Run`` is the state of a run while it happens; ``record_of``
turns it into a ``RunRecord``, the store loads recorded runs back into the
same type, and the faces read its attributes. The result dict that users and
scripts know (``--json``, ``--output``, the Python API's
``result["synthesis"]["synthesis"]``, ``llm -m``'s response_json) is made
from a record in one place, ``result_dict``; ``record_from_result`` reads
one back, as the store keeps it. ``SCHEMA_VERSION`` counts changes to the
record's fields.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from .outcome import counts_text, outcome_of
from .results import MemberResult, Usage, Verdict

SCHEMA_VERSION = 1


class ToolCallRecord(BaseModel):
    """One tool a member called (llm -T): its arguments, and its output or error."""

    name: str
    arguments: Any = None
    output: str | None = None
    error: str | None = None


class CallRecord(BaseModel):
    """One recorded call, of any role (a member, the arbiter, a council
    reviewer), as the store keeps it; a member's with the tools it called."""

    id: int | None = None
    role: str
    model: str
    instance: int | None = None
    prompt: str | None = None
    text: str | None = None
    error: str | None = None
    seconds: float | None = None
    attempts: int | None = None
    cancelled: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    created: str | None = None  # when the call ended
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)


class RoundRecord(BaseModel):
    """One round: every member's answer, the verdict (None when the judge
    never answered) and the judge's raw reply; ``usage`` is the round's
    members and judging together. ``calls`` is every call recorded for the
    round, in the order recorded: a run loaded from the store has them, a
    run's result has its members alone."""

    number: int
    members: list[MemberResult] = Field(default_factory=list)
    verdict: Verdict | None = None
    raw: str = ""
    usage: Usage = Field(default_factory=Usage)
    calls: list[CallRecord] = Field(default_factory=list)


class OutcomeRecord(BaseModel):
    """The run's status and notes, and "k of n agree, m of n answered" (``outcome``)."""

    status: str
    notes: list[str] = Field(default_factory=list)
    members: int | None = None  # None: recorded before the counts were
    answered: int | None = None
    agreeing: int | None = None
    has_answer: bool = True
    threshold_note: str | None = None
    stopped_because: str | None = None
    budget_note: str | None = None
    # The calibrated probability that the answer is right, and the items its map was fitted on (``calibrated``).
    p_right: float | None = None
    calibrated_items: int | None = None
    not_asked: int | None = None  # --adaptive: members never asked (``outcome``)
    decisive: bool = False

    @property
    def counts(self) -> str:
        """ "2 of 3 agree, 3 of 3 answered" (``outcome.counts_text``); "" when not recorded."""
        return counts_text(self.agreeing, self.answered, self.members, self.not_asked, self.decisive)


class SettingsRecord(BaseModel):
    """The settings the run was made with, as its result reports them."""

    models: list[str] = Field(default_factory=list)
    arbiter: str | None = None
    method: str = "arbiter"
    confidence_threshold: float | None = None
    stop_on: str | None = "arbiter"
    max_iterations: int | None = None
    max_cost: float | None = None
    system: str | None = None


class ShuffleRecord(BaseModel):
    """One judging of a judge audit: the answers in another order."""

    order: list[str]  # the members as the judge saw them, "model#instance", Response A first
    winner: list[str] | None = None  # the members whose answer won; None: not identified
    answer: str | None = None  # the winning answer, short, as the verdict wrote it
    confidence: float | None = None
    fallback: str | None = None  # why the members' majority decided instead of the judge
    error: str | None = None  # the judging failed: no verdict


class AuditRecord(BaseModel):
    """A judge audit of a run (``evaluation.audit``): its answers judged
    again in several orders, and how often the winner changed."""

    created: str | None = None
    method: str
    arbiter: str
    seed: int
    original: list[str]  # the members in the order the run's own judge saw them
    reference: list[str] | None = None  # the winner flips are counted against
    reference_from: str = "run"  # "run": the run's own verdict; "shuffles": the most common winner
    shuffles: list[ShuffleRecord] = Field(default_factory=list)
    flips: int | None = None  # None: no winner could be identified
    judged: int = 0  # the shuffles whose winner was identified
    flip_rate: float | None = None
    interval: tuple[float, float] | None = None  # Wilson 95 % interval of the flip rate
    usage: Usage = Field(default_factory=Usage)


class RunRecord(BaseModel):
    """One run, as it happened or as it was recorded."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    prompt: str
    settings: SettingsRecord = Field(default_factory=SettingsRecord)
    rounds: list[RoundRecord] = Field(default_factory=list)
    outcome: OutcomeRecord
    usage: Usage = Field(default_factory=Usage)
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    # The rounds the run went through (the result's iteration_count); a
    # round read from its calls alone, its members still answering, is not one.
    iterations: int = 0
    parent_run_id: str | None = None
    # Whether logs.db holds the whole record, as the face that ran it says
    # (None: not said). Nothing may point at a record unless it is True.
    recorded: bool | None = None
    # What only the store knows: every setting as recorded
    # (``ConsortiumConfig.to_dict``), the saved consortium that made the run,
    # the error it ended with, the runs that judged its answers again (rejudge)
    # and its judge audits (audit).
    config: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    error: str | None = None
    rejudged_as: list[str] = Field(default_factory=list)
    audits: list[AuditRecord] = Field(default_factory=list)  # judge audits of the run, oldest first

    @property
    def answer_round(self) -> RoundRecord | None:
        """The round whose verdict is the answer: the latest judged one
        (an earlier one when --max-cost left the latest unjudged)."""
        return next((r for r in reversed(self.rounds) if r.verdict), None)

    @property
    def verdict(self) -> Verdict | None:
        answer = self.answer_round
        return answer.verdict if answer else None

    @property
    def synthesis(self) -> Verdict:
        """The verdict as the result reports it: an empty, unparsed one when
        no round was judged, or when the run ended without a result (failed,
        cancelled, interrupted: an earlier round's verdict is not its answer;
        each round's stays in ``rounds``)."""
        ended_without_result = self.outcome.status in ("failed", "cancelled", "interrupted", "running")
        return (None if ended_without_result else self.verdict) or Verdict(parse_ok=False)

    @property
    def last_members(self) -> list[MemberResult]:
        """The last round's members (the result's ``model_responses``)."""
        return self.rounds[-1].members if self.rounds else []


def record_of(run) -> RunRecord:
    """The engine's ``Run`` as a ``RunRecord``, as it stands (a run still
    going has no ``finished`` and its seconds so far)."""
    outcome = outcome_of(run)
    judgement = run.last_judgement
    config = run.config
    end = run.finished or datetime.now(timezone.utc)
    return RunRecord(
        run_id=run.run_id,
        prompt=run.prompt,
        settings=SettingsRecord(
            models=list(config.models), arbiter=config.arbiter, method=config.method,
            confidence_threshold=config.confidence_threshold, stop_on=config.stop_on,
            max_iterations=config.max_iterations, max_cost=config.max_cost, system=run.system,
        ),
        rounds=[
            RoundRecord(
                number=r.number,
                members=[m.model_copy(deep=True) for m in r.members],
                verdict=r.judgement.verdict() if r.judgement else None,
                raw=r.arbiter_raw,
                usage=r.usage,
            )
            for r in run.rounds
        ],
        outcome=OutcomeRecord(
            status=outcome.status, notes=outcome.notes, members=outcome.members, answered=outcome.answered,
            agreeing=outcome.agreeing, has_answer=outcome.has_answer, not_asked=outcome.not_asked,
            decisive=outcome.decisive, threshold_note=run.threshold_note(judgement) if judgement else None,
            stopped_because=run.stopped_because, budget_note=run.budget_note,
            p_right=run.p_right, calibrated_items=run.calibration["items"] if run.calibration else None,
        ),
        usage=run.usage.model_copy(),
        started=run.started.isoformat(),
        finished=run.finished.isoformat() if run.finished else None,
        seconds=round((end - run.started).total_seconds(), 3),
        iterations=len(run.rounds),
        parent_run_id=run.parent_run_id,
        config=run.config.to_dict(),
    )


# The result dict: today's documented shape, made here and nowhere else,
# and read back.


def usage_dict(usage: Usage) -> dict:
    return {
        "input": usage.input, "output": usage.output, "total": usage.total, "unreported": usage.unreported,
        "cost_usd": usage.cost_usd, "priced_usd": round(usage.cost, 8), "unpriced": usage.unpriced,
    }


def member_dict(member: MemberResult) -> dict:
    return {**member.model_dump(exclude={"usage"}), "tokens": usage_dict(member.usage)}


def result_dict(record: RunRecord) -> dict:
    """The run as the result dict (``--json``, ``--output``, the Python API, ``llm -m``'s response_json)."""
    settings, outcome = record.settings, record.outcome
    result = {
        "prompt": record.prompt,
        "synthesis": record.synthesis.model_dump(),
        "model_responses": [member_dict(m) for m in record.last_members],
        "iterations": [
            {"round": r.number, "usage": usage_dict(r.usage), "model_responses": [member_dict(m) for m in r.members],
             "arbiter": {"raw": r.raw, **(r.verdict.model_dump() if r.verdict else {})}}
            for r in record.rounds
        ],
        "metadata": {
            "run_id": record.run_id,
            "status": outcome.status,
            "notes": outcome.notes,
            "members": outcome.members,
            "answered": outcome.answered,
            "agreeing": outcome.agreeing,
            "not_asked": outcome.not_asked,
            "decisive": outcome.decisive,
            "has_answer": outcome.has_answer,
            "models": settings.models,
            "arbiter": settings.arbiter,
            "method": settings.method,
            "confidence_threshold": settings.confidence_threshold,
            "stop_on": settings.stop_on,
            "threshold_note": outcome.threshold_note,
            "max_iterations": settings.max_iterations,
            "iteration_count": record.iterations,
            "system_prompt": settings.system,
            "start_time": record.started,
            "end_time": record.finished,
            "seconds": record.seconds,
            "usage": usage_dict(record.usage),
            "max_cost": settings.max_cost,
            "stopped_because": outcome.stopped_because,
            "budget_note": outcome.budget_note,
            "p_right": outcome.p_right,
            "calibrated_items": outcome.calibrated_items,
            "parent_run_id": record.parent_run_id,
        },
    }
    if record.recorded is not None:
        result["metadata"]["recorded"] = record.recorded
    return result


def usage_of(data: dict | None) -> Usage:
    """``usage_dict`` read back; a result written before costs were kept
    reads as unpriced (``unpriced`` None)."""
    data = data or {}
    return Usage(input=data.get("input") or 0, output=data.get("output") or 0,
                       unreported=data.get("unreported") or 0,
                       cost=data.get("priced_usd") or data.get("cost_usd") or 0.0,
                       unpriced=data.get("unpriced", 0 if "priced_usd" in data else None))


def member_of(data: dict) -> MemberResult:
    fields = {key: value for key, value in data.items() if key in MemberResult.model_fields and key != "usage"}
    return MemberResult(**fields, usage=usage_of(data.get("tokens")))


def verdict_of(data: dict) -> Verdict:
    return Verdict(**{key: value for key, value in data.items() if key in Verdict.model_fields})


def record_from_result(result: dict) -> RunRecord:
    """A result dict read back into its record, as the store keeps results:
    one written by an older version lacks the newer keys, which take their
    defaults (the store then sets the status and counts from its columns)."""
    meta = result.get("metadata") or {}
    rounds = []
    for iteration in result.get("iterations") or []:
        arbiter = dict(iteration.get("arbiter") or {})
        raw = arbiter.pop("raw", "") or ""
        rounds.append(RoundRecord(
            number=iteration["round"], members=[member_of(m) for m in iteration.get("model_responses") or []],
            verdict=verdict_of(arbiter) if arbiter else None, raw=raw, usage=usage_of(iteration.get("usage")),
        ))
    return RunRecord(
        run_id=meta.get("run_id") or "",
        prompt=result.get("prompt") or "",
        settings=SettingsRecord(
            models=meta.get("models") or [], arbiter=meta.get("arbiter"), method=meta.get("method") or "arbiter",
            confidence_threshold=meta.get("confidence_threshold"), stop_on=meta.get("stop_on", "arbiter"),
            max_iterations=meta.get("max_iterations"), max_cost=meta.get("max_cost"),
            system=meta.get("system_prompt"),
        ),
        rounds=rounds,
        outcome=OutcomeRecord(
            status=meta.get("status") or "success", notes=meta.get("notes") or [], members=meta.get("members"),
            answered=meta.get("answered"), agreeing=meta.get("agreeing"), has_answer=meta.get("has_answer", True),
            not_asked=meta.get("not_asked"), decisive=meta.get("decisive", False),
            threshold_note=meta.get("threshold_note"), stopped_because=meta.get("stopped_because"),
            budget_note=meta.get("budget_note"), p_right=meta.get("p_right"),
            calibrated_items=meta.get("calibrated_items"),
        ),
        usage=usage_of(meta.get("usage")),
        started=meta.get("start_time"),
        finished=meta.get("end_time"),
        seconds=meta.get("seconds"),
        iterations=meta.get("iteration_count", len(rounds)),
        parent_run_id=meta.get("parent_run_id"),
        recorded=meta.get("recorded"),
    )
