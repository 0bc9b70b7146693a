"""When a run stops iterating: the rule the user chose (``--stop-on``), and
plain words for a run that ended without reaching its threshold.

* ``arbiter`` (the default, the original plugin's rule): the arbiter's
  confidence reaches the threshold;
* ``agreement``: the members' measured agreement reaches it;
* ``both``: both do.

No rule stops before ``min_iterations`` rounds. An agreement that could not
be measured never reaches the threshold: a rule that needs it goes on to
the next round, and the note says why.
"""

from __future__ import annotations

from .config import STOP_RULES
from .outcome import UNANSWERED


def should_stop(config, judgement, round_number: int) -> bool:
    """Whether the run stops after round ``round_number``, whose judgement is ``judgement``."""
    return rule_met(config, round_number, judgement.confidence, judgement.agreement)


def rule_met(config, round_number: int, confidence: float | None, agreement: float | None) -> bool:
    """Whether the stop rule is met after round ``round_number``, judged with these numbers."""
    return round_number >= config.min_iterations and not shortfalls(
        config.stop_on, config.confidence_threshold, confidence, agreement
    )


def last_round(config, round_number: int, confidence: float | None, agreement: float | None) -> bool:
    """Whether round ``round_number``, judged with these numbers, is the
    run's last: the stop rule is met, or it is the ``max_iterations``th.
    (A judge that cannot be read, or ``--max-cost``, may end a run sooner.)"""
    return round_number >= config.max_iterations or rule_met(config, round_number, confidence, agreement)


def shortfalls(rule: str, threshold: float, confidence: float | None, agreement: float | None) -> list[str]:
    """The numbers ``rule`` needs that are short of ``threshold``, in words
    ("confidence 0.72", "agreement unknown"); empty when the rule is met."""
    short = []
    if rule in ("arbiter", "both") and (confidence is None or confidence < threshold):
        short.append("confidence unknown" if confidence is None else f"confidence {confidence:.2f}")
    if rule in ("agreement", "both") and (agreement is None or agreement < threshold):
        short.append("agreement unknown" if agreement is None else f"agreement {agreement:.2f}")
    return short


def threshold_note(rule: str, threshold: float, confidence: float | None, agreement: float | None,
                   rounds: int, ended: str | None = None) -> str | None:
    """Why the threshold was not reached, in one line, or None when it was:
    "confidence 0.72 below the 0.80 threshold after 3 rounds (max
    iterations)". ``ended``: what ended the run, if known."""
    short = shortfalls(rule, threshold, confidence, agreement)
    if not short:
        return None
    unknown = [s for s in short if s.endswith("unknown")]
    known = [s for s in short if s not in unknown]
    parts = [f"{' and '.join(known)} below the {threshold:.2f} threshold"] if known else []
    parts += [f"{s} (it cannot count as reaching the {threshold:.2f} threshold)" for s in unknown]
    text = "; ".join(parts) + f" after {rounds} round{'s' if rounds != 1 else ''}"
    return text + (f" ({ended})" if ended else "")


def ended_by(rounds: int, max_iterations: int | None, stopped_because: str | None, fallback: bool) -> str | None:
    """What ended a run that did not reach its threshold, in a few words."""
    if stopped_because:
        return "stopped by the max cost"
    if fallback:
        return "no judge decided"
    if max_iterations is not None and rounds >= max_iterations:
        return "max iterations"
    return None


def record_note(config: dict, confidence: float | None, agreement: float | None, rounds: int | None,
                stopped_because: str | None, status: str | None) -> str | None:
    """``threshold_note`` for a recorded run (``runs``, ``inspect``); None
    for a run that has no final judgement (running, failed, cancelled).
    Runs recorded before ``stop_on`` existed used the arbiter's rule."""
    if status in UNANSWERED or not rounds:
        return None
    threshold = config.get("confidence_threshold")
    if not isinstance(threshold, (int, float)):
        return None
    rule = config.get("stop_on") if config.get("stop_on") in STOP_RULES else "arbiter"
    max_iterations = config.get("max_iterations") if isinstance(config.get("max_iterations"), int) else None
    ended = ended_by(rounds, max_iterations, stopped_because, status == "degraded")
    return threshold_note(rule, threshold, confidence, agreement, rounds, ended)
