"""The original plugin's method: one arbiter reads every answer and writes the synthesis.

Its confidence is the arbiter's own. Beside it, ``agreement`` measures how
many members gave the same answer: by their short answers where those
compare exactly, else by the groups the arbiter's reply names
(``agreement.measure``).
"""

from __future__ import annotations

from .. import prompts
from ..agreement import measure, short_answers
from ..answers import extract_answer
from ..ballots import label

NAME = "arbiter"
HELP = "one arbiter reads every answer and writes the synthesis"
#: Where ``eval`` lists it by default: the least judging first (vote, arbiter, council).
EVAL_ORDER = 1


async def judge(panel):
    judgement, raw = await panel.arbitrate(arbiter_prompt(panel))
    measured_agreement(panel, raw).record(judgement, panel.answered)
    return judgement, raw


def judges(arbiter: str, members: list[str]) -> list[tuple[str, int]]:
    """One call: the arbiter reads every answer."""
    return [(arbiter, len(members))]


def render(details: dict) -> list[dict]:
    """The arbiter computes nothing beside its reply."""
    return []


def answer(judgement) -> str | None:
    """The short answer in the synthesis."""
    return extract_answer(judgement.synthesis)


def measured_agreement(panel, raw: str):
    """The round's ``Agreement`` over the whole panel (``panel.size``: a
    member that failed agrees with no one). ``raw`` is the reply the
    judgement's groups may be read from: the arbiter's verdict, or, when
    the members' own agreement decided, its grouping reply
    (``judging.members_verdict``, which returns an unreadable verdict only
    where the answers compare exactly, so that its groups are never read)."""
    answered = panel.answered
    return measure(answered, short_answers(answered, panel.run.schema), raw, panel.size)


def extended_arbiter_prompt(panel, template: str, **sections: str) -> str:
    """The original plugin's arbiter prompt for this round's answers (neutral labels
    ``label(i)`` for ``panel.answered[i]``, fenced), placed in ``template``
    as ``$arbiter_prompt`` beside the method's own ``sections``.

    The vote adds its tally this way, and the council its peer review.
    """
    return prompts.template(template).substitute(arbiter_prompt=arbiter_prompt(panel), **sections)


def arbiter_prompt(panel) -> str:
    """The original plugin's arbiter prompt for this round's answers: neutral labels
    ``label(i)`` for ``panel.answered[i]``, each fenced."""
    run = panel.run
    return prompts.arbiter_prompt(
        prompt=run.prompt,
        round_number=panel.number,
        answers=[(label(i), m.text) for i, m in enumerate(panel.answered)],
        fence=run.fence,
        system=run.system,
        conversation=run.conversation,
        earlier=[r.judgement for r in run.rounds if r.judgement],
        schema=run.schema,
    )
