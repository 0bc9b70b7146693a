"""What a run came to, in one vocabulary: its status, the notes behind it,
and the counts "k of n agree, m of n answered".

One status per run, the first of these that applies:

=================  ==========================================================
failed             the run ended with no answer (every member failed, a bug)
cancelled          the user stopped it (Ctrl-C, SIGTERM, SIGHUP)
interrupted        a model plugin raised KeyboardInterrupt, or the recording
                   process died (``store`` derives this for a stale row)
no_verdict         no judge could be read and the members had no majority:
                   there is no answer, only the distinct ones given
degraded           a fallback (the members' majority), not a judge, decided
budget             --max-cost stopped the run (or kept its judge from a call)
partial            some members failed: fewer answers than the panel has
below_threshold    the stop rule's threshold was not reached, or the
                   calibrated p(right) is below --min-p
success            none of the above
=================  ==========================================================

Every condition that applies is also a note, so a partial run that ended
below its threshold says both. The counts are over the panel: ``n`` is
every member instance of the last round less those a ``--quorum``
cancelled once enough had answered; failed, empty and timed-out members
answered nothing and agree with no one; ``k`` is the size of the largest
group of equivalent answers (``agreement``), None when unknown. Under
``--adaptive`` the members never asked are part of ``n`` too, agreeing
with no one, and counted apart: "2 of 5 agree, 3 not asked: decisive".
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("failed", "cancelled", "interrupted", "no_verdict", "degraded", "budget", "partial",
            "below_threshold", "success")
# Statuses that never come with an answer.
UNANSWERED = ("failed", "cancelled", "interrupted", "no_verdict", "running")
# The note a run gets when the answer it streamed is not its answer (``engine.settle_stream``).
WITHDRAWN = "the answer streamed was withdrawn"

# Exit statuses of ``llm consortium run``: an answer printed, none, and an
# answer whose status is not success under --strict.
EXIT_ANSWER, EXIT_NO_ANSWER, EXIT_NOT_SUCCESS = 0, 1, 3


@dataclass
class Outcome:
    status: str
    notes: list[str] = field(default_factory=list)
    members: int = 0  # n
    answered: int = 0  # m
    agreeing: int | None = None  # k
    # Whether there is an answer to print: never for the unanswered statuses,
    # nor for a budget that stopped the run before any round was judged.
    has_answer: bool = True
    # --adaptive: members of the panel never asked, and whether the panel was
    # decisive (it stopped asking because its answer was clear, not for the budget).
    not_asked: int = 0
    decisive: bool = False


def counts_text(agreeing: int | None, answered: int | None, members: int | None, not_asked: int | None = 0,
                decisive: bool | None = False) -> str:
    """ "2 of 3 agree, 3 of 3 answered"; "agreement unknown, 1 of 3 answered";
    under --adaptive "2 of 5 agree, 3 not asked: decisive" (with "1 of 2
    asked answered" when an asked member failed)."""
    if not members:
        return ""
    agree = "agreement unknown" if agreeing is None else f"{agreeing} of {members} agree"
    if not not_asked:
        return f"{agree}, {answered} of {members} answered"
    asked = members - not_asked
    failed = f", {answered} of {asked} asked answered" if answered != asked else ""
    return f"{agree}{failed}, {not_asked} not asked" + (": decisive" if decisive else "")


def exit_code(status: str, strict: bool, has_answer: bool = True, doubtful: bool = False) -> int:
    """0 when an answer is printed, 1 when there is none; with ``strict``, 3
    for an answer whose status is not ``success``; 3 for one ``doubtful``
    (its p(right) below --min-p, ``below_min_p``)."""
    if status in UNANSWERED or not has_answer:
        return EXIT_NO_ANSWER
    return EXIT_NOT_SUCCESS if doubtful or (strict and status != "success") else EXIT_ANSWER


def below_min_p(min_p: float | None, p_right: float | None) -> bool:
    """Whether --min-p is set and p(right) is below it, or unknown."""
    return min_p is not None and (p_right is None or p_right < min_p)


def panel_size(members) -> int:
    """``n``: a round's member results, less those a quorum cancelled."""
    return sum(1 for m in members if not m.quorum_cancelled)


def largest_group(judgement) -> int | None:
    """``k``: the members in the largest group of equivalent answers, or
    None when agreement is unknown."""
    if judgement is None or judgement.agreement is None:
        return None
    groups = (judgement.details.agreement or {}).get("groups") or []
    return max((len(g) for g in groups), default=None)


def min_p_note(min_p: float | None, p_right: float | None) -> str | None:
    """ "not confident enough: ..." when ``--min-p`` is set and p(right) is below it or unknown."""
    if not below_min_p(min_p, p_right):
        return None
    known = "unknown (agreement was not measured)" if p_right is None else f"≈ {p_right:.2f}"
    return f"not confident enough: p(right) {known}, below the minimum of {min_p:.2f}"


def outcome_of(run) -> Outcome:
    """The run's ``Outcome`` as it stands (``run.failure`` set when it ended
    without a result: failed, cancelled, interrupted)."""
    # The round whose judgement is the answer (``Run.answer_round``), else the last round.
    last = run.answer_round or (run.rounds[-1] if run.rounds else None)
    judgement = last.judgement if last else None
    members = panel_size(last.members) if last else len(run.members)
    answered = sum(m.ok for m in last.members) if last else 0
    staging = run.stages.get(last.number) if last else None
    counts = dict(members=members, answered=answered, agreeing=largest_group(judgement),
                  not_asked=sum(m.not_asked for m in last.members) if last else 0,
                  decisive=bool(staging and staging.decisive))
    notes = list(run.notes) + ([staging.summary()] if staging else [])
    if run.failure:
        status, error = run.failure
        return Outcome(status, [error] + notes, **counts, has_answer=False)
    if judgement is None:  # a budget that refused the first judge, or nothing judged at all
        status = "budget" if run.stopped_because else "failed"
        return Outcome(status, [run.stopped_because or "no round was judged"] + notes, **counts, has_answer=False)
    conditions = []
    if judgement.no_verdict:
        answers = "; ".join(f"{c['answer']!r} ({', '.join(c['members'])})" for c in judgement.candidates)
        conditions.append(("no_verdict", f"no verdict: {judgement.fallback or 'no judge could be read'}; "
                                         f"the members answered {answers}"))
    elif judgement.fallback:
        conditions.append(("degraded", f"no judge decided ({judgement.fallback}): the answer is the one "
                                       "most members gave"))
    if run.stopped_because:
        conditions.append(("budget", f"stopped early: {run.stopped_because}; the answer is the last judged round's"))
    failed = [f"{m.model}#{m.instance}" for m in last.members if not m.ok and not m.quorum_cancelled
              and not m.not_asked]
    if failed:
        conditions.append(("partial", f"{len(failed)} of {members} members failed ({', '.join(failed)})"))
    threshold = run.threshold_note(judgement)
    if threshold and not judgement.no_verdict:
        conditions.append(("below_threshold", f"threshold not reached: {threshold}"))
    doubt = min_p_note(run.config.min_p, run.p_right)
    if doubt and not judgement.no_verdict:
        conditions.append(("below_threshold", doubt))
    status = conditions[0][0] if conditions else "success"
    return Outcome(status, [note for _, note in conditions] + judgement.notes + notes, **counts,
                   has_answer=status not in UNANSWERED)
