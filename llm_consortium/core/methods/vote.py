"""Majority vote (self-consistency, Wang et al. arXiv 2203.11171).

Each member ends its answer with a short final answer in ``<answer>`` tags;
the answers are extracted, normalised and counted. When the most common
answer's share of the members reaches the confidence threshold, it is the
round's answer and the arbiter is not called at all: the synthesis is the
full text of the first member that gave it, so the person asking still gets
the reasoning. Otherwise (a tie, no clear majority, or answers that could
not be extracted) the arbiter reads the answers and the tally, and the
details say why it was asked.

Confidence is the measured vote share when the vote decides, and the
arbiter's own confidence when it does not. ``agreement`` is measured as
for every method (``agreement.measure``), over all the members: members
that did not answer agree with no one. Answers that compare exactly (the
usual case for a vote) are grouped by the tally itself; otherwise, when
the arbiter was asked, by the groups its reply names.
"""

from __future__ import annotations

import re

from .. import prompts
from ..agreement import short_answers
from ..answers import Tally, tally
from ..ballots import label
from ..results import Judgement, VoteDetails
from .arbiter import extended_arbiter_prompt, measured_agreement

MEMBER_INSTRUCTIONS = (
    "End your reply with your final short answer inside <answer></answer> tags: "
    "just the answer (a number, a letter, yes/no or a few words), nothing else, "
    "for example <answer>42</answer>."
)


async def judge(panel):
    answered = panel.answered
    # With a schema the answer is the JSON itself, compared as a value.
    answers = short_answers(answered, panel.run.schema)
    # Members that did not answer (failed, or cut off by a quorum) are votes
    # for nothing: 2 of 3 members agreeing is 67 %, not 2 of 2.
    silent = panel.size - len(answered)
    counted = tally(answers + [None] * silent)
    reason = fallback_reason(counted, panel.size, panel.config.confidence_threshold)
    details = VoteDetails(
        tally=counted.counts,
        winner=counted.winner,
        share=counted.share,
        extracted=counted.extracted,
        arbiter_called=reason is not None,
        fallback_reason=reason,
    )
    if reason is None:
        judgement = majority_judgement(answered, answers, counted, panel.size,
                                       panel.config.confidence_threshold)
        if panel.run.schema is not None:
            judgement.synthesis = counted.winner
        raw = ""
    else:
        judgement, raw = await panel.arbitrate(arbiter_prompt(panel, answers, counted, reason))
    judgement.details = details
    measured_agreement(panel, judgement, raw).record(judgement, answered)
    return judgement, raw


def fallback_reason(counted: Tally, members: int, threshold: float) -> str | None:
    """Why the vote cannot decide on its own, or None when it can."""
    if counted.extracted < 2:
        if members < 2:
            return "only one member answered: there is nothing to vote on"
        return f"answers could not be extracted ({counted.extracted} of {members})"
    if counted.tie:
        top = next(iter(counted.counts.values()))
        return f"no majority: the most common answers are tied, {top} of {members} each"
    if counted.share < threshold:
        votes = counted.counts[counted.winner]
        return f"{votes} of {members} agree ({percent(counted.share)}), below the {percent(threshold)} threshold"
    return None


def percent(share: float) -> str:
    """0.6667 -> "67 %"."""
    return f"{share * 100:.0f} %"


def majority_judgement(answered, answers, counted: Tally, members: int, threshold: float):
    """The vote's own judgement: the first answer that gave the winner, no arbiter."""
    winner_text = next(m.text for m, a in zip(answered, answers) if a == counted.winner)
    votes = counted.counts[counted.winner]
    others = [f"{answer} ({count})" for answer, count in counted.counts.items() if answer != counted.winner]
    return Judgement(
        synthesis=without_answer_tags(winner_text),
        confidence=counted.share,
        analysis=f"Majority vote: {votes} of {members} members agree ({percent(counted.share)}) on "
                 f"{counted.winner}, at or above the {percent(threshold)} threshold.",
        dissent=("Other answers: " + ", ".join(others)) if others else "none",
    )


def without_answer_tags(text: str) -> str:
    """The member's answer as the person asking should read it: the
    ``<answer>`` tags the vote asked for are dropped, their content kept."""
    blocks_replaced = re.sub(r"<\s*answer\s*>\s*(.*?)\s*<\s*/\s*answer\s*>", r"\1", text, flags=re.I | re.S)
    return re.sub(r"<\s*/?\s*answer\s*>", "", blocks_replaced, flags=re.I).strip()


def arbiter_prompt(panel, answers: list[str | None], counted: Tally, reason: str) -> str:
    """The arbiter's usual prompt followed by the vote tally, fenced like the answers.

    The tally is computed from member text, so it is untrusted too: it sits in
    a fenced block of its own.
    """
    labels = [label(i) for i in range(len(panel.answered))]
    lines = [
        f"{answer}: {count} ({', '.join(lab for lab, a in zip(labels, answers) if a == answer)})"
        for answer, count in counted.counts.items()
    ]
    missing = [lab for lab, a in zip(labels, answers) if a is None]
    if missing:
        lines.append(f"no short answer found: {', '.join(missing)}")
    return extended_arbiter_prompt(
        panel, "vote_arbiter", reason=reason, tally=prompts.fenced("Vote tally", "\n".join(lines), panel.run.fence)
    )
