"""Majority vote (self-consistency, Wang et al. arXiv 2203.11171).

Each member ends its answer with a short final answer in ``<answer>`` tags;
the answers are extracted, normalised and grouped (``agreement.Group``).
When the largest group's share of the members reaches the confidence
threshold, its answer is the round's answer and the arbiter is not called
at all. That answer is the group's short answer as a member wrote it
("42"), never a member's whole reply: the vote was on the answer, not on
the prose, links or instructions around it. Otherwise (a tie, no clear
majority, or answers that could not be extracted) the arbiter reads the
answers and the tally, and the details say why it was asked.

The share is out of every member of the round less those a --quorum
cancelled (``Panel.size``): members that failed, and
answers with no short answer, vote for nothing; 2 of 3 members agreeing is
67 %, not 2 of 2. Under a schema the answer is the JSON, compared as a
value, and only answers valid against the schema count: an invalid answer
votes for nothing, so one valid answer of three is 33 %, below any usual
threshold, and the arbiter decides (and its answer must be valid too).
When no answer is valid the run fails: nothing valid could win.

Confidence is the measured vote share when the vote decides, and the
arbiter's own confidence when it does not. ``agreement`` is measured as
for every method (``agreement.measure``), over the same members. The
tally in the details lists every answer as a member wrote it, with the
members who gave it.
"""

from __future__ import annotations

from .. import prompts
from ..agreement import Group, answer_key, described, exact_groups, short_answers
from ..answers import extract_answer
from ..ballots import label
from ..config import ConsortiumError
from ..results import Judgement, VoteDetails, tally_rows
from ..safetext import single_line
from .arbiter import extended_arbiter_prompt, measured_agreement
# The budget counts the arbiter's call, as for the arbiter: made when the vote cannot decide.
from .arbiter import judges  # noqa: F401

NAME = "vote"
HELP = "the members' most common short answer wins, or the arbiter decides when there is no clear majority"
#: Where ``eval`` lists it by default: the least judging first (vote, arbiter, council).
EVAL_ORDER = 0
MEMBER_INSTRUCTIONS = (
    "End your reply with your final short answer inside <answer></answer> tags: "
    "just the answer (a number, a letter, yes/no or a few words), nothing else, "
    "for example <answer>42</answer>."
)
# The most characters of a member's schema error quoted in the run's error
# (jsonschema quotes the value, which a member may have made huge).
MAX_REASON_CHARS = 300


async def judge(panel):
    answered = panel.answered
    schema = panel.run.schema
    members = panel.size
    extracted = short_answers(answered, schema)
    keys = [answer_key(m.text, short) for m, short in zip(answered, extracted)]
    groups = sorted(described(answered, extracted, exact_groups(keys), schema), key=lambda g: -len(g.members))
    if schema is not None and all(g.problem for g in groups):
        why = single_line(groups[0].problem)
        raise ConsortiumError("No member's answer is valid against the schema: "
                              + (why if len(why) <= MAX_REASON_CHARS else why[:MAX_REASON_CHARS - 1] + "…"))
    counted = [g for g in groups if g.short and g.problem is None]
    invalid = sum(len(g.members) for g in groups if g.problem)
    reason = fallback_reason(counted, members, panel.config.confidence_threshold, invalid)
    winner = counted[0] if counted and not tied(counted) else None
    details = VoteDetails(
        tally=[tally_row(g, answered) for g in groups],
        winner=winner.answer if winner else None,
        share=len(winner.members) / members if winner else 0.0,
        extracted=sum(short is not None for short in extracted),
        arbiter_called=reason is not None,
        fallback_reason=reason,
    )
    if reason is None:
        judgement = majority_judgement(winner, groups, members, panel.config.confidence_threshold)
        raw = ""
    else:
        judgement, raw = await panel.arbitrate(arbiter_prompt(panel, groups, reason))
    judgement.details = details
    measured_agreement(panel, raw).record(judgement, answered)
    return judgement, raw


def render(details: dict) -> list[dict]:
    """The tally, with the winner marked and who gave each answer; why the arbiter was asked."""
    items = []
    rows = tally_rows(details)
    if rows:
        winner = details.get("winner")
        items.append({"kind": "tally", "title": "Vote",
                      "rows": [{**row, "winner": row["answer"] == winner} for row in rows]})
    if details.get("fallback_reason"):
        items.append({"kind": "note", "label": "Arbiter asked because", "text": details["fallback_reason"]})
    return items


def answer(judgement) -> str | None:
    """The vote's winner when the vote decided (its synthesis is the
    winner's text without the ``<answer>`` tags), else the answer in the
    arbiter's synthesis."""
    details = judgement.details
    if isinstance(details, VoteDetails) and details.winner is not None and not details.arbiter_called:
        return details.winner
    return extract_answer(judgement.synthesis)


def tied(counted: list[Group]) -> bool:
    """Whether the largest groups that count are as large as each other."""
    return len(counted) > 1 and len(counted[0].members) == len(counted[1].members)


def fallback_reason(counted: list[Group], members: int, threshold: float, invalid: int) -> str | None:
    """Why the vote cannot decide on its own, or None when it can.
    ``counted``: the groups whose answers count, largest first."""
    votes = sum(len(g.members) for g in counted)
    if votes < 2:
        if members < 2:
            return "only one member answered: there is nothing to vote on"
        if invalid:
            return f"only {votes} of {members} answers are valid against the schema"
        return f"answers could not be extracted ({votes} of {members})"
    top = len(counted[0].members)
    if tied(counted):
        return f"no majority: the most common answers are tied, {top} of {members} each"
    share = top / members
    if share < threshold:
        also = f"; {invalid} not valid against the schema" if invalid else ""
        return f"{top} of {members} agree ({percent(share)}), below the {percent(threshold)} threshold{also}"
    return None


def percent(share: float) -> str:
    """0.6667 -> "67 %"."""
    return f"{share * 100:.0f} %"


def tally_row(group: Group, answered) -> dict:
    """One line of the tally as the details keep it: the answer as written,
    how many gave it and who, and why it did not count (None if it did)."""
    note = None
    if group.problem:
        note = f"not valid against the schema: {group.problem}"
    elif not group.short:
        note = "no short answer"
    return {"answer": group.answer, "count": len(group.members), "members": group.names(answered), "note": note}


def majority_judgement(winner: Group, groups: list[Group], members: int, threshold: float) -> Judgement:
    """The vote's own judgement, no arbiter: the winning answer as written."""
    share = len(winner.members) / members
    others = [f"{g.answer} ({len(g.members)})" for g in groups if g is not winner]
    return Judgement(
        synthesis=winner.answer,
        confidence=share,
        analysis=f"Majority vote: {len(winner.members)} of {members} members agree ({percent(share)}) on "
                 f"{winner.answer}, at or above the {percent(threshold)} threshold.",
        dissent=("Other answers: " + ", ".join(others)) if others else "none",
    )


def arbiter_prompt(panel, groups: list[Group], reason: str) -> str:
    """The arbiter's usual prompt followed by the vote tally, fenced like the answers.

    The tally is computed from member text, so it is untrusted too: it sits in
    a fenced block of its own.
    """
    def labels(found: list[Group]) -> str:
        return ", ".join(label(i) for g in found for i in g.members)

    lines = [f"{g.answer}: {len(g.members)} ({labels([g])})" for g in groups if g.short and not g.problem]
    invalid = [g for g in groups if g.problem]
    missing = [g for g in groups if not g.short and not g.problem]
    if invalid:
        lines.append(f"not valid against the schema: {labels(invalid)}")
    if missing:
        lines.append(f"no short answer found: {labels(missing)}")
    return extended_arbiter_prompt(
        panel, "vote_arbiter", reason=reason, tally=prompts.fenced("Vote tally", "\n".join(lines), panel.run.fence)
    )
