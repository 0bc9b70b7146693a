"""Result types passed between the stages of a run.

Each stage returns one of these dataclasses; the seed's nested-dict shape
(``result["synthesis"]["synthesis"]``) is produced once, by ``to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Usage:
    """Tokens in and out. ``unreported`` counts the calls whose model
    reported no usage (many local plugins): their tokens are unknown, not 0,
    so a total with ``unreported`` calls is a lower bound."""

    input: int = 0
    output: int = 0
    unreported: int = 0

    def add(self, other: "Usage") -> None:
        self.input += other.input
        self.output += other.output
        self.unreported += other.unreported

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "total": self.total, "unreported": self.unreported}

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclass
class MemberResult:
    """One call of one member model in one round. Errors are data."""

    model: str
    instance: int
    text: str | None = None
    error: str | None = None
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1
    cancelled: bool = False
    queued: float = 0.0  # seconds waiting for a turn, apart from ``seconds`` in the call

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tokens"] = data.pop("usage")
        return data


@dataclass
class Judgement:
    """What a judging step concluded about one round."""

    synthesis: str = ""
    confidence: float = 0.0
    analysis: str = ""
    dissent: str = ""
    needs_iteration: bool = False
    refinement_areas: list[str] = field(default_factory=list)
    parse_ok: bool = True
    # Agreement measured from the answers themselves (vote share, ranking
    # concordance), beside the model's self-reported confidence. None when
    # it cannot be measured.
    agreement: float | None = None
    # What the method computed on the way (a tally, a ranking).
    details: dict = field(default_factory=dict)
    # Why the members' agreement decided instead of a judge (the arbiter
    # failed, or its reply could not be read); None when a judge decided.
    fallback: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
