"""Result types passed between the stages of a run.

Each stage returns one of these; they are also the parts of a
``record.RunRecord`` (declared once, here), from which the original plugin's nested-dict shape
(``result["synthesis"]["synthesis"]``) is produced once, by ``record.result_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, Field


class Usage(BaseModel):
    """Tokens in and out, and dollars. ``unreported`` counts the calls whose
    model reported no usage (many local plugins): their tokens are unknown,
    not 0, so a total with ``unreported`` calls is a lower bound.

    ``cost`` is the dollars of the calls that could be priced (``pricing``);
    ``unpriced`` counts the others, whose price or tokens are unknown. With
    any unpriced call the total cost is unknown (``cost_usd`` is None), not
    the priced part. ``unpriced`` is None for a run recorded before prices
    were: nothing is known about its cost."""

    input: int = 0
    output: int = 0
    unreported: int = 0
    cost: float = 0.0
    unpriced: int | None = 0

    def add(self, other: "Usage") -> None:
        self.input += other.input
        self.output += other.output
        self.unreported += other.unreported
        self.cost += other.cost
        self.unpriced = (self.unpriced or 0) + (other.unpriced or 0)

    @property
    def cost_usd(self) -> float | None:
        return None if self.unpriced or self.unpriced is None else round(self.cost, 8)

    @property
    def total(self) -> int:
        return self.input + self.output


class MemberResult(BaseModel):
    """One call of one member model in one round. Errors are data."""

    model: str
    instance: int
    text: str | None = None
    error: str | None = None
    seconds: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    attempts: int = 1
    cancelled: bool = False
    queued: float = 0.0  # seconds waiting for a turn, apart from ``seconds`` in the call
    # Cancelled because a --quorum had answered: not part of the panel that
    # agreement and "m of n answered" count (a member that failed is).
    quorum_cancelled: bool = False
    # Never asked: an adaptive panel (--adaptive) was decisive, or its
    # budget ran out, before this member's stage. Part of the panel, agreeing with no one.
    not_asked: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class Details:
    """What a judging method computed on the way to its judgement. The
    arbiter method computes nothing more than every method's ``agreement``
    (``agreement.Agreement.to_dict``: the groups of equivalent answers);
    the others add their own fields. ``to_dict`` is the JSON of results and
    records: the method's fields, then ``agreement`` once it is measured."""

    agreement: dict | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        agreement = data.pop("agreement")
        return data if agreement is None else {**data, "agreement": agreement}


@dataclass
class VoteDetails(Details):
    """The majority vote: the tally, most common first, one row per answer
    that every member who gave it is listed in (``tally_rows``); the
    winner's answer (None on a tie), its share of the members, how many
    answers had a short answer, and why the arbiter was asked (None when
    the vote decided on its own)."""

    tally: list[dict] = field(default_factory=list)
    winner: str | None = None
    share: float = 0.0
    extracted: int = 0
    arbiter_called: bool = False
    fallback_reason: str | None = None


def tally_rows(details: dict) -> list[dict]:
    """A vote's tally as rows of {"answer", "count", "members", "note"}:
    the answer as a member wrote it, how many gave it, who ("model#1"),
    and why it did not count (None if it did).

    Runs recorded before the tally listed members stored it as
    {normalised answer: count}; those are read as rows with no members
    known, so that every recorded run still shows its tally."""
    tally = details.get("tally") or []
    if isinstance(tally, dict):
        return [{"answer": answer, "count": count, "members": [], "note": None} for answer, count in tally.items()]
    return tally


@dataclass
class CouncilDetails(Details):
    """The peer review: each answer's Borda score and interval, best first,
    every ballot, the ballots dropped, why there was no review (if there was
    none) and how far the reviewers agree with the aggregate ranking."""

    ranking: list[dict] = field(default_factory=list)
    ballots: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    review_skipped: str | None = None
    concordance: float | None = None


class Verdict(BaseModel):
    """What the judging concluded about one round, as results and records
    keep it: ``details`` is what the method computed (a tally, a ranking),
    as JSON (``Details.to_dict``)."""

    synthesis: str = ""
    confidence: float = 0.0
    analysis: str = ""
    dissent: str = ""
    refinement_areas: list[str] = Field(default_factory=list)
    parse_ok: bool = True
    # Agreement measured from the answers themselves (vote share, ranking
    # concordance), beside the model's self-reported confidence. None when
    # it cannot be measured.
    agreement: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    # Why the members' agreement decided instead of a judge (the arbiter
    # failed, or its reply could not be read); None when a judge decided.
    fallback: str | None = None
    # No judge could be read and the members had no strict majority: there
    # is no answer. ``candidates`` then lists every distinct answer with the
    # members that gave it ({"answer": text, "members": ["model#1", ...]}).
    no_verdict: bool = False
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    # What the person asking must be told about how this judgement was
    # reached (a reply cut before parsing, a verdict rejected as an echo ...).
    notes: list[str] = Field(default_factory=list)


class Judgement(Verdict):
    """A verdict while the run is judged: its ``details`` are the method's
    own ``Details`` (the stages read and add to them), made JSON by ``verdict()``."""

    details: Any = Field(default_factory=lambda: Details())

    def verdict(self) -> Verdict:
        return Verdict(**{**dict(self), "details": self.details.to_dict()})
