"""What a consortium is: its members, its arbiter and its stopping rules.

Validation happens here, before any model is called, and raises
``ConsortiumConfigError`` with a one-line message a user can act on.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from .methods import names as method_names

# The defaults the original plugin documents. They are only useful to
# people who have those plugins and keys installed; the error raised when
# they are missing says how to choose other models.
DEFAULT_MODELS = [
    "claude-3-opus-20240229",
    "claude-3-sonnet-20240229",
    "gpt-4",
    "gemini-pro",
]
DEFAULT_ARBITER = "claude-3-opus-20240229"
# What must reach the confidence threshold for a run to stop (see ``stopping``).
STOP_RULES = ("arbiter", "agreement", "both")
# Attempts per call: past this, retries only add waiting.
MAX_ATTEMPTS = 10


class ConsortiumConfigError(ValueError):
    """A mistake in what the user asked for. The message is one line."""


class UnknownModelsError(ConsortiumConfigError):
    """Models llm does not know, named in ``models``."""

    def __init__(self, models: list[str]):
        self.models = models
        label = "Unknown model" if len(models) == 1 else "Unknown models"
        super().__init__(f"{label}: {', '.join(models)} (see 'llm models' for the installed ones)")


class ConsortiumError(RuntimeError):
    """A run could not produce an answer (every member failed, or the arbiter did).

    ``result`` holds what had arrived before the failure, in the same shape
    as a successful result, so nothing is lost. The message, which quotes
    what models and servers said, is one printable line: llm prints it as it
    is (``Error: ...``), and so may any caller.
    """

    def __init__(self, message: str, result: dict | None = None):
        from .safetext import single_line

        super().__init__(single_line(message))
        self.result = result


def parse_threshold(value) -> float:
    """A confidence threshold: a fraction in 0-1 (``0.8``), a whole
    percentage above 1 (``80``), or a percentage written with ``%``
    (``"80%"``, ``"1.5%"``). Anything else (``1.5``, ``150``, ``-1``) is
    refused rather than guessed at."""
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = float(text[:-1] if percent else text)
    except ValueError:
        number = math.nan
    if percent and 0 <= number <= 100:
        return number / 100
    if not percent and 0 <= number <= 1:
        return number
    if not percent and number.is_integer() and 1 < number <= 100:
        return number / 100
    raise ConsortiumConfigError(
        f"Confidence threshold must be between 0 and 1 (0.8), a whole percentage (80) or a percentage "
        f"with % (80%, 1.5%), got {value!r}"
    )


_PLAIN_DECIMAL = re.compile(r"\$?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_max_cost(value) -> float:
    """A budget in dollars: a plain decimal (``0.05``, ``2``, ``1.5``), with
    or without a leading $. What Python's ``float`` also reads is refused:
    ``1_0`` ($10, not $1.0), ``1e3``, ``inf``, ``nan``, a sign, other digits."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)  # a number already (Python, or a saved consortium)
    text = str(value).strip()
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise ConsortiumConfigError(
            f"max cost must be a plain decimal number of dollars, such as 0.05 or 2, got {value!r}"
        )
    return float(text.lstrip("$"))


_COUNT_SUFFIX = re.compile(r"^(?P<model>.+):(?P<count>\d+)$")


def split_count(spec: str, known: set[str] | None = None) -> tuple[str, int]:
    """``"gpt-4:2"`` -> ``("gpt-4", 2)``.

    Model ids may contain colons themselves (``llama3:8b``), so a spec that
    is itself a known model id is never split, and only an all-digit suffix
    is read as a count. Given the ``known`` ids, a known model followed by
    something other than a count of 1 or more (``m:0``, ``m:x``) is refused.
    """
    if known is not None and spec in known:
        return spec, 1
    model, colon, count = spec.rpartition(":")
    if known is not None and colon and model in known and not (count.isdecimal() and int(count) >= 1):
        raise ConsortiumConfigError(
            f"Bad member count in {spec!r}: the count after ':' must be a whole number, 1 or more"
        )
    match = _COUNT_SUFFIX.match(spec)
    if match and int(match["count"]) >= 1:
        return match["model"], int(match["count"])
    return spec, 1


def setting(default, help: str, kind=str, *, flag: str | None = None, option: bool = True, choices=None,
            metavar: str | None = None):
    """A field of ``ConsortiumConfig`` that users set. Declared once here:
    ``help`` is its one help text, shown by the command-line flag of ``run``
    and ``save`` (``flag``, by default ``--name-with-dashes``), the ``-o``
    option of a saved consortium's llm model (unless ``option`` is False)
    and ``show``. ``kind`` is the type the ``-o`` option accepts; values are
    checked by ``ConsortiumConfig`` itself, so every face gives the same
    one-line error. ``metavar`` names the flag's value in ``--help``.
    ``choices`` returns the values allowed, read when they are offered or
    checked: the methods are the registry's (``methods.names``), so that a
    method's file is all it takes to offer it."""
    return field(default=default, metadata={
        "help": help, "kind": kind, "flag": flag, "option": option, "choices": choices, "metavar": metavar,
    })


@dataclass
class ConsortiumConfig:
    """A consortium's settings. Also what ``llm consortium save`` stores."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    arbiter: str = setting(DEFAULT_ARBITER, "Model that judges the answers", option=False)
    confidence_threshold: float = setting(
        0.8, "Stop once confidence reaches this (0-1, or a percentage such as 80 or 80%); --stop-on says "
        "which confidence", float | str
    )
    # Text, not a click choice: a bad value is refused by the consortium's
    # own check, in one line, from a flag as from -o.
    stop_on: str = setting(
        "arbiter", "What must reach the threshold to stop: arbiter (its confidence), agreement (the share of "
        "members giving the same answer) or both", metavar="[arbiter|agreement|both]",
    )
    max_iterations: int = setting(3, "Most rounds", int)
    min_iterations: int = setting(1, "Fewest rounds", int)
    # Not an -o option: llm's own -s/--system sets it on a saved consortium.
    system_prompt: str | None = setting(
        None, "System prompt for every member and the arbiter", flag="--system", option=False
    )
    method: str = setting("arbiter", "How a round is judged", choices=method_names)
    timeout: float | None = setting(300.0, "Seconds each model call may take before it is abandoned", float)
    attempts: int = setting(3, "Attempts per call on transient errors (429, 5xx, lost connections)", int)
    # First backoff delay in seconds; doubles per attempt, with full jitter.
    # Python only: tests and benchmarks shorten it.
    retry_backoff: float = 1.0
    max_concurrency: int = setting(32, "Most model calls in flight at once, across the whole run", int)
    quorum: int | None = setting(None, "Judge a round once this many members have answered (default: all)", int)
    # Text as well as a number, so that a bad value is refused by the
    # consortium's own check, in one line (see ``budget``).
    max_cost: float | None = setting(
        None, "Most dollars the run may spend (a plain decimal, such as 0.05): each call is sent a max_tokens "
        "that keeps the run within it, no round starts that would pass it, and every model's price must be known "
        "unless unpriced models are allowed", float | str, metavar="USD",
    )
    allow_unpriced: bool = setting(
        False, "With --max-cost, run models whose price is unknown (or whose replies cannot be bounded) "
        "instead of refusing them: the budget then counts only the known costs", bool,
    )
    strict: bool = setting(
        False, "Exit with status 3 when the answer comes with any status but success (partial, "
        "below_threshold, degraded, budget): for scripts that must not take a doubtful answer", bool,
    )
    adaptive: bool = setting(
        False, "Ask the members in stages, the cheapest first, and stop once the answer the panel leads with is "
        "probably the whole panel's majority (at the confidence threshold); vote and arbiter methods only", bool,
    )
    embed: str | None = setting(
        None, "With --adaptive: the llm embedding model that groups free-text answers between stages (else one "
        "grouping call to the arbiter)", metavar="MODEL",
    )
    embed_threshold: float = setting(
        0.9, "With --embed: the cosine similarity at which two answers count as the same", float,
    )
    min_p: float | None = setting(
        None, "Mark the answer below_threshold, with a 'not confident enough' line, when its calibrated "
        "p(right) is below this (0-1); needs a calibration: llm consortium eval DATA --consortium NAME "
        "--calibrate", float | str, metavar="P",
    )

    def __post_init__(self):
        if isinstance(self.models, str):
            self.models = [self.models]
        self.models = [m.strip() for m in self.models if m and m.strip()]
        if not self.models:
            raise ConsortiumConfigError("A consortium needs at least one model (-m)")
        if not self.arbiter or not str(self.arbiter).strip():
            raise ConsortiumConfigError("A consortium needs an arbiter model (--arbiter)")
        self.arbiter = str(self.arbiter).strip()
        self.confidence_threshold = parse_threshold(self.confidence_threshold)
        self.max_iterations = _positive_int("max iterations", self.max_iterations)
        self.min_iterations = _positive_int("min iterations", self.min_iterations)
        if self.min_iterations > self.max_iterations:
            raise ConsortiumConfigError(
                f"min iterations ({self.min_iterations}) exceeds max iterations ({self.max_iterations})"
            )
        if self.stop_on not in STOP_RULES:
            raise ConsortiumConfigError(
                f"Unknown stop rule {self.stop_on!r}: choose one of {', '.join(STOP_RULES)}"
            )
        if self.method not in method_names():
            raise ConsortiumConfigError(
                f"Unknown method {self.method!r}: choose one of {', '.join(method_names())}"
            )
        if self.timeout is not None:
            self.timeout = _finite("timeout", self.timeout)
            if self.timeout <= 0:
                raise ConsortiumConfigError("timeout must be a positive number of seconds")
        self.retry_backoff = _finite("retry backoff", self.retry_backoff)
        if self.retry_backoff < 0:
            raise ConsortiumConfigError("retry backoff must not be negative")
        self.attempts = _positive_int("attempts", self.attempts)
        if self.attempts > MAX_ATTEMPTS:
            raise ConsortiumConfigError(f"attempts must be at most {MAX_ATTEMPTS}, got {self.attempts}")
        self.max_concurrency = _positive_int("max concurrency", self.max_concurrency)
        if self.quorum is not None:
            self.quorum = _positive_int("quorum", self.quorum)
        if self.max_cost is not None:
            self.max_cost = parse_max_cost(self.max_cost)
        self.allow_unpriced = _flag("allow unpriced", self.allow_unpriced)
        self.system_prompt = self.system_prompt or None
        self.strict = _flag("strict", self.strict)
        self.adaptive = _flag("adaptive", self.adaptive)
        if self.adaptive and self.method == "council":
            raise ConsortiumConfigError("--adaptive works with the vote and arbiter methods, not council")
        self.embed = str(self.embed or "").strip() or None
        self.embed_threshold = _finite("embed threshold", self.embed_threshold)
        if not -1 <= self.embed_threshold <= 1:
            raise ConsortiumConfigError(f"embed threshold must be a cosine similarity, -1 to 1, got {self.embed_threshold}")
        if self.min_p is not None:
            self.min_p = _finite("min p", self.min_p)
            if not 0 <= self.min_p <= 1:
                raise ConsortiumConfigError(f"min p must be a probability between 0 and 1, got {self.min_p}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def settings(cls) -> list:
        """The fields users set (declared with ``setting``), in order."""
        return [f for f in fields(cls) if "help" in f.metadata]

    @classmethod
    def from_dict(cls, data: dict) -> "ConsortiumConfig":
        """Build from stored JSON, ignoring keys this version doesn't know.

        Configurations saved by llm-consortium 0.3 use the same key names
        (models, arbiter, confidence_threshold, max_iterations, system_prompt);
        0.3 stored ``models`` as a ``{model: count}`` mapping in some versions,
        which is accepted too.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        models = values.get("models")
        if isinstance(models, dict):
            values["models"] = [
                model if int(count) == 1 else f"{model}:{int(count)}"
                for model, count in models.items()
            ]
        return cls(**values)


def _flag(name: str, value) -> bool:
    """A yes/no setting: a bool, or 1/0, true/false, yes/no, on/off as text (``-o strict 1``)."""
    if isinstance(value, bool):
        return value
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}
    text = str(value).strip().lower()
    if text not in words:
        raise ConsortiumConfigError(f"{name} must be 1 or 0 (true or false), got {value!r}")
    return words[text]


def _finite(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConsortiumConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConsortiumConfigError(f"{name} must be a finite number, got {value}")
    return number


def _positive_int(name: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConsortiumConfigError(f"{name} must be a whole number, got {value!r}") from None
    if number != float(value) or number < 1:
        raise ConsortiumConfigError(f"{name} must be at least 1, got {value}")
    return number
