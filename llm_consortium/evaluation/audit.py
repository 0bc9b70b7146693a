"""``llm consortium audit RUN_ID``: how much a run's verdict depends on the
order its answers were shown in (position bias: Zheng et al., arXiv
2306.05685, found judges keep their verdict on only about 65 % of pairs
when the order is swapped).

The run's last-round answers, as stored (``rejudge.reused_answers``), are
judged again ``shuffles`` times by the run's own method and arbiter, each
time in another order; labels follow the order shown (Response A is the
first), so every answer is relabelled too. No member is asked again; the
arbiter is. The judging is rejudge's: the engine's ``execute`` with the
answers given (``judging.judge_round`` inside), on a run that is not
recorded: the audit is one measurement of the run, not K answers to it,
so it is stored as one row beside the run (``store.save_audit``) rather
than as K linked runs that would crowd the runs list and the viewer.

The winner of a judging is the group of members whose answer the verdict
chose: the members whose short answer (``answers.extract_answer``) or,
without one, whose whole normalised text equals the synthesis's, widened
to the group the verdict's agreement puts them in (the arbiter's
``<groups>``, when those grouped the answers). A flip is a judging whose
winner differs from the run's own (or, when the run's own cannot be
identified, from the most common one). The flip rate is over the judgings
whose winner was identified, with its Wilson 95 % interval (sound for
few trials and for rates of 0 or 1, where a bootstrap interval collapses).
When no winner can be identified (free text the judge rewrote), only the
spread of the confidences is reported.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import permutations

DEFAULT_SHUFFLES = 5
# Orders are enumerated (and drawn without repeats) up to this many answers: 6! = 720.
ENUMERATED = 6
Z95 = 1.959963984540054


class AuditError(ValueError):
    """A run that cannot be audited, said in one line."""


def check(record, method: str) -> list:
    """The run's answers to audit, in the order its own judge saw them
    (``rejudge.reused_answers``); ``AuditError`` when there is nothing to reorder
    or the method would ask the members again."""
    from .rejudge import reused_answers

    if method == "council":
        raise AuditError("A council run cannot be audited: its peer review asks the members again, "
                         "and an audit asks only the arbiter")
    answers = [pair for pair in reused_answers(record) if pair[0].ok]
    if len(answers) < 2:
        raise AuditError(f"Run {record.run_id[:8]} has fewer than two member answers: no order to change")
    return answers


def orders(n: int, k: int, rng: random.Random) -> list[list[int]]:
    """``k`` orders of ``n`` answers (positions into the original order),
    never the original; all different while there are enough of them."""
    if n <= ENUMERATED:
        others = [list(order) for order in permutations(range(n))][1:]  # the first is the original
        rng.shuffle(others)
        return [others[i % len(others)] for i in range(k)]
    chosen = []
    while len(chosen) < k:
        order = list(range(n))
        rng.shuffle(order)
        if order != sorted(order):
            chosen.append(order)
    return chosen


def name(member) -> str:
    return f"{member.model}#{member.instance}"


def winner(verdict, answered: list) -> tuple[list[str] | None, str | None]:
    """(the members whose answer ``verdict`` chose, sorted, or None; that
    answer, short, as the synthesis has it)."""
    from ..core.agreement import answer_key, short_answers
    from ..core.answers import extract_answer, written_answer

    if verdict is None or verdict.no_verdict:
        return None, None
    chosen = extract_answer(verdict.synthesis)
    target = answer_key(verdict.synthesis, chosen)
    keys = [answer_key(m.text, short) for m, short in zip(answered, short_answers(answered, None))]
    matching = {name(answered[i]) for i, key in enumerate(keys) if key == target}
    if not matching:
        return None, None
    for group in (verdict.details.get("agreement") or {}).get("groups") or []:
        names = {f"{m['model']}#{m['instance']}" for m in group}
        if names & matching:
            matching |= names
            break
    return sorted(matching), written_answer(verdict.synthesis) if chosen is not None else None


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` in ``n`` trials; None for none."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def audit(record, *, shuffles: int = DEFAULT_SHUFFLES, seed: int | None = None, config=None,
          on_shuffle=None):
    """Audit ``record`` (a ``RunRecord``): its answers judged ``shuffles``
    times in other orders, with ``config`` (default: the run's own settings,
    ``ConsortiumConfig``). ``on_shuffle(number, shuffle)`` is told of each
    judging as it ends. Returns the ``AuditRecord``; raises ``AuditError``
    or ``ConsortiumConfigError`` before any call."""
    from ..core.config import ConsortiumConfig, ConsortiumError
    from ..core.record import AuditRecord, ShuffleRecord, record_of
    from ..core.results import Usage
    from ..core.runner import run_coroutine
    from ..storage.store import now
    from .rejudge import in_members_order, prepared

    config = config or ConsortiumConfig.from_dict(record.config)
    answers = check(record, config.method)
    orchestrator, run = prepared(config, record, recorded=False)  # every model checked before any call
    answers = in_members_order(answers, run)
    members = [member for member, _ in answers]
    seed = random.randrange(2**31) if seed is None else seed
    result = AuditRecord(created=now(), method=config.method, arbiter=config.arbiter, seed=seed,
                         original=[name(m) for m in members], usage=Usage())
    own = record.answer_round.verdict if record.answer_round else None
    result.reference = winner(own, members)[0]
    for number, order in enumerate(orders(len(answers), shuffles, random.Random(seed)), 1):
        shown = [answers[i] for i in order]
        if number > 1:
            orchestrator, run = prepared(config, record, recorded=False)  # a fresh run: its own fence
        try:
            run_coroutine(orchestrator.execute(run, shown))
        except ConsortiumError as exc:
            shuffle = ShuffleRecord(order=[name(m) for m, _ in shown], error=str(exc))
        else:
            verdict = record_of(run).verdict
            chosen, answer = winner(verdict, members)
            shuffle = ShuffleRecord(order=[name(m) for m, _ in shown], winner=chosen, answer=answer,
                                    confidence=verdict.confidence, fallback=verdict.fallback)
        result.usage.add(record_of(run).usage)
        result.shuffles.append(shuffle)
        if on_shuffle:
            on_shuffle(number, shuffle)
    return counted(result)


def counted(result):
    """``result`` with its flips, flip rate and interval counted from its shuffles."""
    winners = [tuple(s.winner) for s in result.shuffles if s.winner is not None]
    if result.reference is None and winners:
        result.reference, result.reference_from = list(Counter(winners).most_common(1)[0][0]), "shuffles"
    result.judged = len(winners)
    if result.reference is None or not winners:
        result.flips = result.flip_rate = result.interval = None
        return result
    result.flips = sum(w != tuple(result.reference) for w in winners)
    result.flip_rate = result.flips / len(winners)
    result.interval = wilson(result.flips, len(winners))
    return result


def confidence_spread(result) -> str:
    """The confidence of the audit's judgings, lowest to highest ("confidence
    0.60–0.90", or one number when they are all one); "" without any."""
    values = [s.confidence for s in result.shuffles if s.confidence is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    return f"confidence {low:.2f}" + (f"–{high:.2f}" if high > low else "")
