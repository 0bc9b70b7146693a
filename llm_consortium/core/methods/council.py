"""Peer review, after karpathy/llm-council, with its known flaws fixed.

1. The members' answers of the round are the material (``panel.answered``).
2. Every member that answered ranks the OTHER members' answers. Each
   reviewer sees them in its own order, shuffled by ``random.Random(seed)``
   with a seed derived from the run id, the round and the reviewer's index
   (recorded, so every order can be reproduced), labelled ``Response A``,
   ``Response B``, ... in the order shown. A reviewer never sees its own
   answer, no prompt names a model, and every answer is fenced with the
   run's delimiter. A ballot that cannot be read is asked for once more,
   then dropped and recorded as dropped.
3. The ballots are combined by a Borda count normalised by ballot length,
   with a bootstrap interval per answer, and the arbiter, as chairman,
   writes the synthesis from the answers and the rankings, in the arbiter's
   XML.

Confidence is the chairman's own; ``agreement`` is measured as for every
method (``agreement.measure``: the members' short answers, or the groups
the chairman's reply names). How far the reviewers agree with each other
is in the details: ``concordance``, the share of their pairwise
preferences that agree with the aggregate ranking.
With fewer than three answers there is nothing to review (each reviewer
would see at most one answer), and the chairman judges the answers alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from itertools import combinations

from .. import prompts
from ..ballots import borda, bootstrap_intervals, label, parse_ballot
from ..results import CouncilDetails
from .arbiter import extended_arbiter_prompt, measured_agreement
# The short answer is the one in the chairman's synthesis, as for the arbiter.
from .arbiter import answer  # noqa: F401

NAME = "council"
HELP = "the members rank each other's answers, then the arbiter, as chairman, writes the synthesis"
#: Where ``eval`` lists it by default: the least judging first (vote, arbiter, council).
EVAL_ORDER = 2

#: Fewest answers for a peer review: with two, each reviewer would rank one.
MIN_ANSWERS_TO_REVIEW = 3


def judges(arbiter: str, members: list[str]) -> list[tuple[str, int]]:
    """The chairman reads every answer; with enough answers for a peer
    review, each member reviews the others'."""
    calls = [(arbiter, len(members))]
    if len(members) >= MIN_ANSWERS_TO_REVIEW:
        calls += [(model, len(members) - 1) for model in members]
    return calls


def render(details: dict) -> list[dict]:
    """The peer ranking, each answer's score, interval and ballots; why
    there is no ranking; the ballots dropped (a detail, for where there
    is room)."""
    items = []
    ranking = details.get("ranking")
    if ranking:
        items.append({"kind": "ranking", "title": "Peer ranking", "rows": ranking})
        if not any(entry.get("ballots") for entry in ranking):
            items.append({"kind": "note", "text": "Peer review produced no usable ballots: the chairman judged "
                                                  "without a ranking."})
    for dropped in details.get("dropped") or []:
        items.append({"kind": "note", "label": f"Ballot of {dropped.get('model')} #{dropped.get('instance')} dropped",
                      "text": dropped.get("reason"), "detail": True})
    if details.get("review_skipped"):
        items.append({"kind": "note", "label": "Peer review skipped", "text": details["review_skipped"]})
    return items


async def judge(panel):
    answered = panel.answered
    if len(answered) < MIN_ANSWERS_TO_REVIEW:
        skipped = (
            f"{len(answered)} answer{'s' if len(answered) != 1 else ''}: "
            f"a peer review needs at least {MIN_ANSWERS_TO_REVIEW}"
        )
        details = CouncilDetails(review_skipped=skipped)
        review = f"There was no peer review this round: {skipped}."
    else:
        details, review = await peer_review(panel)
    judgement, raw = await panel.arbitrate(extended_arbiter_prompt(panel, "council_chair", review=review))
    judgement.details = details
    measured_agreement(panel, raw).record(judgement, answered)
    return judgement, raw


async def peer_review(panel) -> tuple[CouncilDetails, str]:
    """Stage 2 and the aggregate: (details, the review summary for the chairman)."""
    answered = panel.answered
    labels = [label(i) for i in range(len(answered))]
    ballots = await asyncio.gather(*(ask_reviewer(panel, j) for j in range(len(answered))))
    dropped = [
        {"model": b["model"], "instance": b["instance"],
         "reason": b["error"] or "no readable FINAL RANKING, even after a reminder"}
        for b in ballots if b["ranking"] is None
    ]
    rankings = [b["ranking"] for b in ballots if b["ranking"] is not None]
    scores = borda(rankings, labels)
    intervals = bootstrap_intervals(rankings, labels)
    best_first = sorted(range(len(labels)), key=lambda i: -scores[labels[i]])
    ranking = [
        {
            "label": labels[i],
            "model": answered[i].model,
            "instance": answered[i].instance,
            "score": scores[labels[i]],
            "interval": list(intervals[labels[i]]),
            "ballots": sum(labels[i] in r for r in rankings),
        }
        for i in best_first
    ]
    details = CouncilDetails(ranking=ranking, ballots=ballots, dropped=dropped,
                             concordance=concordance(rankings, scores))
    return details, review_summary(ranking, rankings, len(dropped))


def ballot_seed(run_id: str, round_number: int, reviewer: int) -> int:
    """The shuffle seed of one reviewer in one round: stable for a run, different across reviewers."""
    digest = hashlib.sha256(f"{run_id}:{round_number}:{reviewer}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shown_order(run_id: str, round_number: int, reviewer: int, answers: int) -> tuple[int, list[int]]:
    """(seed, indices of the answers the reviewer sees, in the order shown): all but its own, shuffled."""
    seed = ballot_seed(run_id, round_number, reviewer)
    order = [i for i in range(answers) if i != reviewer]
    random.Random(seed).shuffle(order)
    return seed, order


async def ask_reviewer(panel, reviewer: int) -> dict:
    """One reviewer's ballot: its seed, the order it saw and its ranking (None if unreadable).

    Labels in ``order`` and ``ranking`` are the answers' round-wide labels
    (``label(i)`` for ``panel.answered[i]``), not the ones the reviewer saw.
    """
    member = panel.answered[reviewer]
    seed, order = shown_order(panel.run.run_id, panel.number, reviewer, len(panel.answered))
    shown = [label(k) for k in range(len(order))]
    prompt = review_prompt(panel, [(shown[k], panel.answered[i].text) for k, i in enumerate(order)])
    ballot = {
        "model": member.model, "instance": member.instance, "seed": seed,
        "order": [label(i) for i in order], "ranking": None, "attempts": 0, "error": None,
    }
    for attempt_prompt in (prompt, prompt + prompts.template("council_reminder").template):
        ballot["attempts"] += 1
        outcome = await panel.call(member.model, attempt_prompt, role="reviewer", instance=member.instance)
        if outcome.error:
            ballot["error"] = outcome.error
            return ballot
        ranking = parse_ballot(outcome.text, shown)
        if ranking is not None:
            ballot["ranking"] = [ballot["order"][shown.index(lab)] for lab in ranking]
            return ballot
    return ballot


def review_prompt(panel, answers: list[tuple[str, str]]) -> str:
    """A reviewer's prompt: the original prompt and the answers it ranks, fenced; no model names."""
    run = panel.run
    context = ""
    if run.system:
        context += (
            "\nThe person asking set these instructions for the answer; judge whether each response "
            f"follows them:\n<instructions>\n{run.system.strip()}\n</instructions>\n"
        )
    if run.conversation:
        context += f"\n# Conversation so far\nThe prompt continues this conversation:\n{run.conversation.strip()}\n"
    shown = [lab for lab, _ in answers]
    return prompts.template("council_review").substitute(
        fence=run.fence,
        context=context,
        prompt=run.prompt.strip(),
        responses="\n\n".join(prompts.fenced(lab, text, run.fence) for lab, text in answers),
        example_first=shown[-1],
        example_second=shown[0],
    )


def review_summary(ranking: list[dict], rankings: list[list[str]], dropped: int) -> str:
    """The aggregate ranking and every reviewer's ballot, by label only, for the chairman."""
    unread = ""
    if dropped == 1:
        unread = "1 ballot could not be read and was left out."
    elif dropped:
        unread = f"{dropped} ballots could not be read and were left out."
    if not rankings:
        return f"No ballot could be read, so there is no ranking: judge the answers on their own. {unread}"
    lines = [
        "Aggregate ranking, best first (Borda score: 1 = always ranked first, 0 = always last; "
        "90% bootstrap interval in brackets; overlapping intervals mean no clear winner):"
    ]
    for place, entry in enumerate(ranking, 1):
        low, high = entry["interval"]
        lines.append(
            f"{place}. {entry['label']}: {entry['score']:.2f} [{low:.2f}, {high:.2f}], "
            f"ranked by {entry['ballots']} reviewer{'s' if entry['ballots'] != 1 else ''}"
        )
    lines += ["", "Each reviewer's ranking, best first:"]
    lines += [f"Reviewer {n}: {' > '.join(r)}" for n, r in enumerate(rankings, 1)]
    if unread:
        lines.append(unread)
    return "\n".join(lines)


def concordance(rankings: list[list[str]], scores: dict[str, float]) -> float | None:
    """Share of the reviewers' pairwise preferences that agree with the aggregate scores.

    Every pair of answers a ballot orders counts once: 1 when the aggregate
    puts them in the same order, 0.5 when it ties them, 0 otherwise; each
    ballot's mean is averaged over the ballots. 1.0 means every reviewer
    agrees with the consensus; about 0.5 means there is none (a perfect
    cycle gives exactly 0.5). None with fewer than two ballots.
    """
    usable = [r for r in rankings if len(r) >= 2]
    if len(usable) < 2:
        return None
    means = []
    for ranking in usable:
        pairs = list(combinations(ranking, 2))
        agreeing = sum(
            0.5 if math.isclose(scores[better], scores[worse]) else float(scores[better] > scores[worse])
            for better, worse in pairs
        )
        means.append(agreeing / len(pairs))
    return sum(means) / len(means)
