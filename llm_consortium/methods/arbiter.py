"""The seed's method: one arbiter reads every answer and writes the synthesis.

Its confidence is the arbiter's own. Beside it, ``agreement`` measures how
many members gave the same short answer, when answers can be extracted.
"""

from __future__ import annotations

from .. import prompts
from ..aggregate import extract_answer, label, tally


async def judge(panel):
    judgement, raw = await panel.arbitrate(arbiter_prompt(panel))
    judgement.agreement = measured_agreement(panel.answered)
    return judgement, raw


def measured_agreement(answered) -> float | None:
    """Share of members behind the most common short answer; None when
    fewer than two answers could be extracted (long prose)."""
    counted = tally([extract_answer(m.text) for m in answered])
    return counted.share if counted.extracted >= 2 else None


def extended_arbiter_prompt(panel, template: str, **sections: str) -> str:
    """The seed's arbiter prompt for this round's answers (neutral labels
    ``label(i)`` for ``panel.answered[i]``, fenced), placed in ``template``
    as ``$arbiter_prompt`` beside the method's own ``sections``.

    The vote adds its tally this way, and the council its peer review.
    """
    return prompts.template(template).substitute(arbiter_prompt=arbiter_prompt(panel), **sections)


def arbiter_prompt(panel) -> str:
    """The seed's arbiter prompt for this round's answers: neutral labels
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
