"""``--max-cost``: a run never starts a round whose estimated cost would
take it past its budget in dollars.

The estimate of the next round:

* before round 1, nothing has been spent or measured, so the round is
  priced (``pricing``) from the prompt: each member still in the run reads
  the prompt, system prompt and conversation, at one token per four
  characters, and writes ``pricing.ASSUMED_REPLY_TOKENS``; the arbiter reads
  its real prompt built around replies of that length, and writes as much;
  with the council method, every member also reviews that much;
* after a round, the next round is assumed to cost what the last one did,
  members and judging together.

A round whose estimate would take what the run has spent past the budget
is not started: the run ends with the best answer so far (the last round's)
and says why. If that is round 1, nothing can be answered within the budget
and the run is refused before any call, as a mistake in what was asked.
The budget bounds what is started, by estimate: a round that costs more
than its estimate (a longer reply than assumed) can still end past it.

Calls whose price is unknown (a model genai-prices does not know, or one
that reports no usage) cannot be counted. They do not block a run: the
budget is checked against the known part of the cost, which is a lower
bound, so a run stopped by it was certainly over; the run says once that
the check was partial. Refusing every run with an unpriced model would
make ``--max-cost`` unusable with local models, which cost nothing billed.
"""

from __future__ import annotations

from . import pricing, prompts
from .pricing import ASSUMED_REPLY_TOKENS, dollars, estimated_tokens
from .results import Usage

UNKNOWN_NOTE = (
    "the max cost was checked against the known part of the cost only: some calls' prices are unknown "
    "(a model without a known price, or one that reports no usage)"
)


def over_budget(run, number: int) -> str | None:
    """Why round ``number`` must not start (its estimated cost would take
    the run past ``--max-cost``), or None when it may.

    When a part of the cost is unknown, says so once, in ``run.budget_note``.
    """
    budget = run.config.max_cost
    if budget is None:
        return None
    estimate = next_round_estimate(run)
    if (estimate.unpriced or run.usage.unpriced) and run.budget_note is None:
        run.budget_note = UNKNOWN_NOTE
    total = run.usage.cost + estimate.cost
    if total <= budget:
        return None
    if number == 1:
        members = len(active_members(run))
        return (
            f"max cost {dollars(budget, exact=True)} is less than the first round's estimated cost, about "
            f"{dollars(estimate.cost)} ({members} member{'s' if members != 1 else ''} and the judging; prompt "
            f"at {pricing.CHARS_PER_TOKEN} characters a token, replies of {ASSUMED_REPLY_TOKENS} tokens)"
        )
    return (
        f"round {number} would cost about {dollars(estimate.cost)} (as round {number - 1} did), taking the run "
        f"to about {dollars(total)}, past the max cost of {dollars(budget, exact=True)}"
    )


def next_round_estimate(run) -> Usage:
    """The estimated tokens and dollars of the run's next round (see the module's docstring)."""
    if run.rounds:
        return run.rounds[-1].usage
    return first_round_estimate(run)


def first_round_estimate(run) -> Usage:
    """Round 1 priced from the prompt, before any call is made."""
    from .ballots import label
    from .methods import member_instructions
    from .methods.council import MIN_ANSWERS_TO_REVIEW

    asked = "\n".join(filter(None, [run.system, member_instructions(run.config.method), run.conversation, run.prompt]))
    members = active_members(run)
    reply = "x" * (ASSUMED_REPLY_TOKENS * pricing.CHARS_PER_TOKEN)
    judging = estimated_tokens(prompts.arbiter_prompt(
        prompt=run.prompt, round_number=1, answers=[(label(i), reply) for i in range(len(members))],
        fence=run.fence, system=run.system, conversation=run.conversation, earlier=[], schema=run.schema,
    ))
    calls = [(model, estimated_tokens(asked)) for model, _ in members]
    calls.append((run.config.arbiter, judging))
    if run.config.method == "council" and len(members) >= MIN_ANSWERS_TO_REVIEW:
        # each member ranks the others' answers
        calls += [(model, judging) for model, _ in members]
    usage = Usage()
    for model, input_tokens in calls:
        usage.add(pricing.priced(run.handles[model].model, input_tokens, ASSUMED_REPLY_TOKENS))
    return usage


def active_members(run) -> list[tuple[str, int]]:
    """The members still asked (not dropped after failing)."""
    return [member for member in run.members if member not in run.dropped]
