"""``--max-cost``: what a run spends stays within its budget in dollars.

Three rules bind it.

**Every model's price must be known** (``unpriced_models``). A model that
genai-prices does not price, or whose ``Options`` have no ``max_tokens``
(its replies cannot be bounded), is refused before any call, in one line
naming it, unless ``allow_unpriced`` is set (``--allow-unpriced``,
``-o allow_unpriced 1``). Then its calls are neither bounded nor counted:
the budget is checked against the known part of the cost, and the run
says so once (``UNKNOWN_NOTE``). A priced model that reports no usage is
counted the same way, as it can only be found out after the call.

**Every call's reply is bounded.** Each member and judging call is sent
``max_tokens``, computed from what is left of the budget and the models'
prices. Before a round, ``reply_tokens`` shares what is left among the
calls about to be made: every member may write as many tokens as every
other, and each judging call (the arbiter; with the council, each
reviewer) as many as a member, and never fewer than ``JUDGE_MIN_TOKENS``;
the prompts are paid for first, each judge's including every answer it
will read. No call is sent more than ``MAX_REPLY_TOKENS``. When a judging
call starts it is priced again, from its real prompt and what has really
been spent, less the most that the judging calls still in flight can cost
(``reserve``). If what is left cannot pay for its prompt and a reply of
``JUDGE_MIN_TOKENS``, the call is not made: a council reviewer's ballot is
then left out, and an arbiter that is not called ends the run
(``BudgetStop``): ``Run.stopped_because`` says why, and the run's answer is
the last one a judge gave in an earlier round, or none at all when no round
was judged (no synthesis; nothing is raised).

**No round starts that would cross the budget** (``over_budget``). A round
is started only if its expected cost fits what is left (before round 1,
each member and judge reading its prompt and writing
``pricing.ASSUMED_REPLY_TOKENS``; after that, what the last round cost),
and if its members can still be sent as many tokens as they are expected
to write (``expected_reply_tokens``) once the prompts and the judging's
shortest replies are paid for: a round whose answers would be cut shorter
than the last round's is not worth paying for. When round 1 cannot start,
the run is refused before any call, as a mistake in what was asked; a
later round ends the run with the last round's answer.

What is estimated rather than measured: prompts, at
``pricing.CHARS_PER_TOKEN`` characters a token (no tokenizer is loaded). A
prompt that tokenizes more densely (code, most languages other than
English) costs more than estimated, by that many prompt tokens; replies
are bounded exactly. Not bounded: a member given tools (``-T``) makes a
chain of calls, each bounded by the same ``max_tokens``; a member cancelled
by ``--quorum`` reports no usage, although its provider may bill what it
had written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import pricing, prompts
from .pricing import ASSUMED_REPLY_TOKENS, dollars, estimated_tokens
from .results import Usage

# The fewest reply tokens a judging call is sent: the arbiter's reply holds
# its analysis, groups, dissent, confidence and the synthesis itself, and a
# reply cut short of its synthesis cannot be read. A judge that cannot be
# paid this much is not called.
JUDGE_MIN_TOKENS = 1024
# The most reply tokens any call is sent under --max-cost, however large
# the budget: a max_tokens above a model's own limit is refused by its
# provider, and every model genai-prices prices accepts this many (Claude 3
# models write at most 4,096).
MAX_REPLY_TOKENS = 4096

UNKNOWN_NOTE = (
    "the max cost was checked against the known part of the cost only: some calls' prices are unknown "
    "(a model without a known price, or one that reports no usage)"
)


class BudgetStop(Exception):
    """A judging call that what is left of the budget cannot pay for: it is not made."""


def rates(handle) -> tuple[float, float] | None:
    """(dollars per prompt token, dollars per reply token) of a model, or
    None when the budget cannot count its calls: its price is unknown, or
    its Options have no ``max_tokens`` to bound its replies with."""
    if "max_tokens" not in handle.model.Options.model_fields:
        return None
    return pricing.rates(handle.model)


def unpriced_models(run) -> list[str]:
    """The run's models whose calls the budget cannot count (see ``rates``)."""
    names = dict.fromkeys([model for model, _ in active_members(run)] + [run.config.arbiter])
    return [name for name in names if rates(run.handles[name]) is None]


def over_budget(run, number: int, prompt: str | None = None) -> str | None:
    """Why round ``number``, whose members are asked ``prompt`` (by default
    the run's), must not start, or None when it may; then
    ``run.reply_tokens`` is the ``max_tokens`` of its members' calls.

    When a part of the cost is unknown, says so once, in ``run.budget_note``.
    """
    budget = run.config.max_cost
    if budget is None:
        return None
    if number == 1 and not run.config.allow_unpriced:
        unpriced = unpriced_models(run)
        if unpriced:
            return (
                f"--max-cost needs the price of every model, and {', '.join(unpriced)} "
                f"{'has' if len(unpriced) == 1 else 'have'} none (no known price, or no max_tokens option to "
                "bound its replies): --allow-unpriced (-o allow_unpriced 1) runs anyway, counting only known costs"
            )
    estimate = next_round_estimate(run)
    if (estimate.unpriced or run.usage.unpriced) and run.budget_note is None:
        run.budget_note = UNKNOWN_NOTE
    total = run.usage.cost + estimate.cost
    if total > budget:
        if number == 1:
            members = len(active_members(run))
            return (
                f"max cost {dollars(budget, exact=True)} is less than the first round's estimated cost, about "
                f"{dollars(estimate.cost)} ({members} member{'s' if members != 1 else ''} and the judging; "
                f"prompt at {pricing.CHARS_PER_TOKEN} characters a token, replies of {ASSUMED_REPLY_TOKENS} "
                "tokens)"
            )
        return (
            f"round {number} would cost about {dollars(estimate.cost)} (as round {number - 1} did), taking the "
            f"run to about {dollars(total)}, past the max cost of {dollars(budget, exact=True)}"
        )
    run.reply_tokens, least = reply_tokens(run, prompt or run.prompt)
    wanted = expected_reply_tokens(run)
    if run.reply_tokens < wanted:
        usual = f"the {wanted} of a usual answer" if number == 1 else \
            f"the {wanted} of round {number - 1}'s longest answer"
        return (
            f"round {number} would leave each member at most {run.reply_tokens} tokens of reply, fewer than "
            f"{usual}: the {dollars(budget - run.usage.cost)} left of the max cost of {dollars(budget, exact=True)} "
            f"must first pay for its prompts and the judging's shortest reply ({JUDGE_MIN_TOKENS} tokens), about "
            f"{dollars(least)}"
        )
    return None


def expected_reply_tokens(run) -> int:
    """How long the next round's answers are expected to be: as long as
    the longest of the last round's (as its provider counted it), or
    ``pricing.ASSUMED_REPLY_TOKENS`` before round 1 or when none was counted.
    A round whose ``max_tokens`` would cut them shorter is not started."""
    counted = [m.usage.output for m in run.rounds[-1].members if m.usage.output] if run.rounds else []
    return min(max(counted, default=ASSUMED_REPLY_TOKENS), MAX_REPLY_TOKENS)


def reply_tokens(run, prompt: str) -> tuple[int, float]:
    """(the ``max_tokens`` of each member's call in the next round, whose
    members are asked ``prompt``; the least that round can cost: its
    prompts and its judging calls' shortest replies). Below 1 when what is
    left of the budget cannot pay for that least. See the module's
    docstring."""
    from .ballots import label
    from .methods import judges, member_instructions

    members = active_members(run)
    asked = estimated_tokens("\n".join(filter(None, [
        run.system, member_instructions(run.config.method), run.conversation, prompt,
    ])))
    judging = estimated_tokens(prompts.arbiter_prompt(
        prompt=run.prompt, round_number=len(run.rounds) + 1, answers=[(label(i), "") for i in range(len(members))],
        fence=run.fence, system=run.system, conversation=run.conversation,
        earlier=[r.judgement for r in run.rounds if r.judgement], schema=run.schema,
    ))
    calls = judges(run.config.method, run.config.arbiter, [model for model, _ in members])
    fixed = 0.0  # dollars of the prompts
    per_answer = 0.0  # dollars per token of every member's answer: writing it, and each judge reading it
    per_judgement = 0.0  # dollars per token of every judging call's reply
    for model, _ in members:
        prompt_rate, reply_rate = rates(run.handles[model]) or (0.0, 0.0)
        fixed += asked * prompt_rate
        per_answer += reply_rate
    for model, reads in calls:  # (model, how many answers it reads)
        prompt_rate, reply_rate = rates(run.handles[model]) or (0.0, 0.0)
        fixed += judging * prompt_rate
        per_answer += reads * prompt_rate
        per_judgement += reply_rate
    left = run.config.max_cost - run.usage.cost - run.reserved
    least = fixed + per_judgement * JUDGE_MIN_TOKENS
    tokens = affordable_tokens(left - fixed, per_answer + per_judgement)  # judges write as much as members
    if tokens < JUDGE_MIN_TOKENS:  # judges write their shortest reply; members what is left
        tokens = affordable_tokens(left - least, per_answer)
    return tokens, least


def affordable_tokens(dollars_left: float, per_token: float) -> int:
    """How many tokens at ``per_token`` dollars ``dollars_left`` pays for;
    ``MAX_REPLY_TOKENS`` when they cost nothing counted."""
    if dollars_left < 0:
        return 0
    if per_token <= 0:
        return MAX_REPLY_TOKENS
    return min(MAX_REPLY_TOKENS, math.floor(dollars_left / per_token))


def with_max_tokens(run, model: str, options: dict | None) -> dict | None:
    """A member's options (``-o``) with its ``max_tokens`` for this round:
    the smaller of the user's and the budget's (``run.reply_tokens``)."""
    if run.config.max_cost is None or run.reply_tokens is None or rates(run.handles[model]) is None:
        return options
    given = (options or {}).get("max_tokens")
    return {**(options or {}), "max_tokens": min(given or run.reply_tokens, run.reply_tokens)}


@dataclass
class Reservation:
    """One judging call's share of the budget, held while the call runs."""

    run: object
    options: dict | None = None  # {"max_tokens": n}, or None: not bounded
    dollars: float = 0.0  # the most the call can cost

    def release(self) -> None:
        self.run.reserved -= self.dollars
        self.dollars = 0.0


def reserve(run, model: str, prompt: str, role: str, number: int, answers=()) -> Reservation:
    """The ``max_tokens`` of one judging call (none without a budget or for
    a model the budget cannot count), with the most the call can cost held
    as reserved until it is released, so that the judging calls in flight
    at once cannot together pass the budget.

    Raises ``BudgetStop`` when what is left cannot pay for the prompt and a
    reply of ``JUDGE_MIN_TOKENS``: the call must not be made. The members'
    ``answers`` that the prompt quotes whole are counted as their providers
    counted them, the rest of it estimated.
    """
    budget = run.config.max_cost
    prices = None if budget is None else rates(run.handles[model])
    if prices is None:
        return Reservation(run)
    prompt_cost = prompt_tokens(prompt, answers) * prices[0]
    left = budget - run.usage.cost - run.reserved
    tokens = affordable_tokens(left - prompt_cost, prices[1])
    if role == "reviewer" and run.reply_tokens:  # a reviewer's fair share, as planned
        tokens = min(tokens, max(run.reply_tokens, JUDGE_MIN_TOKENS))
    if tokens < JUDGE_MIN_TOKENS:
        raise BudgetStop(
            f"the {role} ({model}) of round {number} was not called: the {dollars(left)} left of the max cost "
            f"of {dollars(budget, exact=True)} cannot pay for its prompt and a reply of {JUDGE_MIN_TOKENS} tokens"
        )
    most = prompt_cost + tokens * prices[1]
    run.reserved += most
    return Reservation(run, {"max_tokens": tokens}, most)


def prompt_tokens(prompt: str, answers) -> int:
    """The tokens of a judging prompt: estimated, except the answers (``MemberResult``)
    it quotes whole, whose tokens their providers reported."""
    tokens = estimated_tokens(prompt)
    for answer in answers:
        text = (answer.text or "").strip()  # as ``prompts.fenced`` quotes it
        if answer.usage.output and text and text in prompt:
            tokens += answer.usage.output - estimated_tokens(text)
    return tokens


def next_round_estimate(run) -> Usage:
    """The expected tokens and dollars of the run's next round (see the module's docstring)."""
    if run.rounds:
        return run.rounds[-1].usage
    return first_round_estimate(run)


def first_round_estimate(run) -> Usage:
    """Round 1 priced from the prompt, before any call is made."""
    from .ballots import label
    from .methods import judges, member_instructions

    asked = "\n".join(filter(None, [run.system, member_instructions(run.config.method), run.conversation, run.prompt]))
    members = active_members(run)
    reply = "x" * (ASSUMED_REPLY_TOKENS * pricing.CHARS_PER_TOKEN)
    judging = estimated_tokens(prompts.arbiter_prompt(
        prompt=run.prompt, round_number=1, answers=[(label(i), reply) for i in range(len(members))],
        fence=run.fence, system=run.system, conversation=run.conversation, earlier=[], schema=run.schema,
    ))
    calls = [(model, estimated_tokens(asked)) for model, _ in members]
    calls += [(model, judging) for model, _ in judges(run.config.method, run.config.arbiter,
                                                       [model for model, _ in members])]
    usage = Usage()
    for model, input_tokens in calls:
        usage.add(pricing.priced(run.handles[model].model, input_tokens, ASSUMED_REPLY_TOKENS))
    return usage


def active_members(run) -> list[tuple[str, int]]:
    """The members still asked (not dropped after failing)."""
    return [member for member in run.members if member not in run.dropped]
