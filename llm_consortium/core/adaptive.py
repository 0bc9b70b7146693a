"""Adaptive panels (``--adaptive``): ask the members in stages and stop
once the answer the panel leads with is probably the whole panel's majority.

The idea is Adaptive-Consistency's (Aggarwal et al., arXiv 2305.11860:
stop sampling once the vote is decisive), applied to a fixed panel of
different models instead of samples of one.

**Order.** Members whose price is known come first, cheapest first (the
dollars of one call: the prompt as estimated, a reply of
``pricing.ASSUMED_REPLY_TOKENS``), then the others in the order the panel
lists them. The first stage asks ``FIRST_STAGE`` members at once.

**When to stop.** After each stage the answers are grouped, and the
largest group (a strict leader: a tie leads nothing) is the leading
answer. Each member not asked yet is modelled as giving the leading answer
with an unknown rate ``q``, with a uniform prior, ``Beta(1, 1)``; after
``k`` of the ``a`` members asked gave it (a member that failed gave
something else), ``q ~ Beta(1 + k, 1 + a - k)``. This is a Dirichlet over
the answers collapsed to "the leading one" and "any other", which is all
a majority needs. The number of the ``r = n - a`` members left that would
give it is then Beta-binomial, and ``majority_probability`` is the chance
that ``k`` plus that number is more than half of the whole panel ``n``.
When it reaches the run's confidence threshold the panel is decisive and
no one else is asked. Otherwise the next stage asks the fewest members
that could make it decisive, were they all to agree with the leader (at
least one).

**Grouping between stages**, without a judge where possible: by the
answers' short answers where those compare exactly
(``agreement.exact_enough``); for free text, by the cosine similarity of
the embeddings of the model the user names (``--embed``; two answers at
or above ``embed_threshold`` are one answer, each joining the first group
whose first answer it is that close to); otherwise by one grouping-only
call to the arbiter (``prompts.grouping_prompt``), as the members'
fallback verdict asks it.

**Judging.** A decisive panel whose leading answer is a short answer
needs no judge: its answer is that one, its confidence the probability
above (``decided``). Otherwise (not decisive, or free text that needs a
synthesis) the method judges as always. Agreement is over the whole
panel: members not asked agree with no one ("2 of 5 agree, 3 not asked").

**Budget.** Under ``--max-cost`` a stage whose members' expected cost,
with the arbiter's shortest reply, would take the run past the budget is
not started: the round is judged on the members asked, and the run stops
there (status ``budget``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from . import calibrated, pricing, prompts
from .agreement import Agreement, answer_key, described, exact_enough, exact_groups, parse_groups, short_answers
from .answers import without_answer_tags
from .ballots import label
from .budget import JUDGE_MIN_TOKENS, BudgetStop, reserve
from .calls import CallOutcome
from .config import ConsortiumConfigError
from .errors import describe
from .results import Details, Judgement, MemberResult, Usage, VoteDetails

#: Members asked in the first stage.
FIRST_STAGE = 2
#: The prior on the rate at which a member not asked gives the leading answer: Beta(1, 1), uniform.
PRIOR = (1.0, 1.0)

Key = tuple[str, int]


def majority_probability(leading: int, asked: int, panel: int, prior: tuple[float, float] = PRIOR) -> float:
    """The posterior probability that an answer ``leading`` of the ``asked``
    members gave is given by more than half of all ``panel`` members."""
    need = panel // 2 + 1 - leading  # how many more the answer needs
    left = panel - asked
    if need <= 0:
        return 1.0
    if need > left:
        return 0.0
    alpha, beta = prior[0] + leading, prior[1] + asked - leading
    total = sum(_beta_binomial(x, left, alpha, beta) for x in range(need, left + 1))
    return min(1.0, round(total, 12))  # rounded: an exact 0.8 must not read 0.7999999999999985


def _beta_binomial(x: int, n: int, alpha: float, beta: float) -> float:
    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    log_choose = math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
    return math.exp(log_choose + log_beta(x + alpha, n - x + beta) - log_beta(alpha, beta))


def next_stage_size(leading: int, asked: int, panel: int, threshold: float) -> int:
    """The fewest members the next stage asks: those that would make the
    panel decisive if they all gave the leading answer; all that are left
    when none would."""
    left = panel - asked
    return next((s for s in range(1, left) if majority_probability(leading + s, asked + s, panel) >= threshold),
                left)


@dataclass
class Stage:
    """The panel after one stage: members asked so far, those in the
    leading group (0 when none leads) and the probability that it is the majority."""

    asked: int
    leading: int
    probability: float


@dataclass
class Staging:
    """One round's stages, as ``outcome`` and the judging read them."""

    panel: int
    threshold: float
    stages: list[Stage] = field(default_factory=list)
    # How the answers were grouped between stages (the last time): "short answers",
    # "embeddings (MODEL)" or "a grouping call to the arbiter"; the groups'
    # ``agreement`` source, and the groups over the round's answers, in panel order.
    measured_by: str | None = None
    source: str | None = None
    groups: list[list[int]] = field(default_factory=list)
    decisive: bool = False
    # Decisive, and its answer a short one that no judge was asked about (``decided``):
    # the panel's stop is the round's and the run's; otherwise the judge's verdict meets the stop rule.
    without_judge: bool = False
    note: str | None = None  # what went wrong while grouping (an embedding model that failed ...)
    usage: Usage = field(default_factory=Usage)  # the grouping calls'

    def summary(self) -> str:
        """One line for the run's notes."""
        last = self.stages[-1] if self.stages else Stage(0, 0, 0.0)
        count = len(self.stages)
        text = (f"adaptive: {last.asked} of {self.panel} members asked in {count} stage{'s' if count != 1 else ''} "
                f"(cheapest first); p(the leading answer is the whole panel's majority) = {last.probability:.2f}")
        if self.decisive:
            text += f", at or above the {self.threshold:.2f} threshold: decisive"
        elif last.asked < self.panel:
            text += f", below the {self.threshold:.2f} threshold"
        if self.measured_by:
            text += f"; agreement between stages measured by {self.measured_by}"
        return text + (f" ({self.note})" if self.note else "")


def order(run, keys: list[Key], asked_text: str) -> list[Key]:
    """``keys`` in the order they are asked: priced ones cheapest first, then the rest as listed."""
    tokens = pricing.estimated_tokens(asked_text)

    def price(key: Key) -> float | None:
        rates = pricing.rates(run.handles[key[0]].model)
        return None if rates is None else rates[0] * tokens + rates[1] * pricing.ASSUMED_REPLY_TOKENS

    prices = {key: price(key) for key in keys}
    priced = sorted((k for k in keys if prices[k] is not None), key=lambda k: prices[k])
    return priced + [k for k in keys if prices[k] is None]


AskSome = Callable[[list[Key]], Awaitable[None]]


async def ask_in_stages(run, number: int, asked_text: str, results: dict, ask_some: AskSome, *, call, limiter,
                        emit) -> Staging:
    """Ask the round's members (those not dropped) in stages, filling
    ``results`` (key -> ``MemberResult``) through ``ask_some(keys)``; those
    never asked get a result marked ``not_asked``. Returns the round's
    ``Staging``, also kept in ``run.stages[number]``."""
    config = run.config
    waiting = order(run, [k for k in run.members if k not in run.dropped], asked_text)
    staging = run.stages[number] = Staging(panel=len(run.members), threshold=config.confidence_threshold)
    size = FIRST_STAGE
    embeddings: dict[Key, list[float]] = {}
    while waiting:
        stage, rest = waiting[:size], waiting[size:]
        if staging.stages:
            refused = over_budget(run, number, stage, asked_text, results)
            if refused:
                run.stopped_because = refused
                break
        await ask_some(stage)
        waiting = rest
        answered = [key for key in run.members if key in results and results[key].ok]
        staging.groups = await group(run, number, [results[k] for k in answered], answered, staging, embeddings,
                                     call=call, limiter=limiter, emit=emit)
        asked = len(results)  # every member asked so far, and those dropped in earlier rounds (they failed)
        sizes = sorted(map(len, staging.groups), reverse=True) or [0]
        leading = sizes[0] if len(sizes) == 1 or sizes[0] > sizes[1] else 0  # a tie leads nothing
        probability = majority_probability(leading, asked, staging.panel) if leading else 0.0
        staging.stages.append(Stage(asked, leading, probability))
        if leading and probability >= config.confidence_threshold and confident_enough(run, leading, staging.panel,
                                                                                        probability):
            staging.decisive = bool(waiting)
            break
        # Sized for the largest group (one of those tied, on a tie): the fewest that could make it lead.
        size = next_stage_size(sizes[0], asked, staging.panel, config.confidence_threshold)
    for key in waiting:
        results[key] = MemberResult(model=key[0], instance=key[1], attempts=0, not_asked=True)
    return staging


async def group(run, number, answered: list[MemberResult], keys: list[Key], staging: Staging, embeddings: dict,
                *, call, limiter, emit) -> list[list[int]]:
    """The groups of equivalent answers among ``answered`` (see the module's
    docstring), recording in ``staging`` what measured them."""
    extracted = short_answers(answered, run.schema)
    compared = [answer_key(m.text, a) for m, a in zip(answered, extracted)]
    if len(answered) < 2 or exact_enough(compared, extracted):
        staging.measured_by, staging.source = "short answers", "exact"
        return exact_groups(compared)
    if run.config.embed:
        try:
            groups = await embedding_groups(run.config.embed, answered, keys, embeddings, run.config.embed_threshold)
            staging.measured_by, staging.source = f"embeddings ({run.config.embed})", "embedding"
            return groups
        except Exception as exc:  # the embedding model's plugin failed: a model error is data
            staging.note = f"the embedding model {run.config.embed} failed: {describe(exc)}"
    groups, why = await grouping_call(run, number, answered, staging, call=call, limiter=limiter, emit=emit)
    if groups is None:
        staging.measured_by, staging.source = "the answers' text (the grouping call gave no groups)", "exact"
        staging.note = why
        return exact_groups(compared)
    staging.measured_by, staging.source = "a grouping call to the arbiter", "arbiter"
    return groups


def check_embedding_model(model_id: str) -> None:
    """Refuse, before any call, an embedding model llm does not know."""
    import llm

    try:
        llm.get_embedding_model(model_id)
    except llm.UnknownModelError:
        raise ConsortiumConfigError(f"Unknown embedding model: {model_id} (see 'llm embed-models')") from None


async def embedding_groups(model_id: str, answered: list[MemberResult], keys: list[Key], cache: dict,
                           threshold: float) -> list[list[int]]:
    """Answers whose embeddings are at least ``threshold`` alike (cosine),
    each in the first group whose first answer it is that close to.
    ``cache`` keeps each member's vector across the round's stages."""
    import llm

    missing = [i for i, key in enumerate(keys) if key not in cache]
    if missing:
        model = llm.get_embedding_model(model_id)
        texts = [without_answer_tags(answered[i].text) for i in missing]
        vectors = await asyncio.to_thread(lambda: list(model.embed_multi(texts)))
        cache.update({keys[i]: list(vector) for i, vector in zip(missing, vectors)})
    groups: list[list[int]] = []
    for i, key in enumerate(keys):
        home = next((g for g in groups if cosine(cache[keys[g[0]]], cache[key]) >= threshold), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return groups


def cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm else 0.0


async def grouping_call(run, number, answered: list[MemberResult], staging: Staging, *, call, limiter,
                        emit) -> tuple[list[list[int]] | None, str | None]:
    """One call to the arbiter asking only which answers agree: (groups, None),
    or (None, why) when it failed, gave no groups or the budget cannot pay for it."""
    model = run.config.arbiter
    prompt = prompts.grouping_prompt(run.prompt, [(label(i), m.text) for i, m in enumerate(answered)], run.fence)
    try:
        budget = reserve(run, model, prompt, "arbiter", number, answered)
    except BudgetStop as stop:
        return None, str(stop)
    outcome = CallOutcome()
    try:
        outcome = await call(
            run.handles[model], role="arbiter", instance=1, prompt=prompt, options=budget.options,
            timeout=run.config.timeout, attempts=run.config.attempts, backoff=run.config.retry_backoff,
            limiter=limiter, on_attempt=lambda _: emit("call_started", run, number, "arbiter", model, 1),
            outcome=outcome,
        )
    finally:
        budget.release()
        run.usage.add(outcome.usage)
        staging.usage.add(outcome.usage)
        emit("call_finished", run, number, "arbiter", model, 1, outcome, prompt)
    if outcome.error:
        return None, f"the grouping call failed: {outcome.error}"
    return parse_groups(outcome.text or "", len(answered))


def over_budget(run, number: int, stage: list[Key], asked_text: str, results: dict) -> str | None:
    """Why the next stage (``stage``'s members) must not start under
    --max-cost, or None: its members reading the prompt and writing as much
    as the longest answer so far, and the arbiter's shortest reply, would
    take the run past the budget. Models the budget cannot price count 0."""
    budget = run.config.max_cost
    if budget is None:
        return None
    tokens = pricing.estimated_tokens(asked_text)
    replies = max((m.usage.output for m in results.values() if m.usage.output), default=pricing.ASSUMED_REPLY_TOKENS)
    cost = sum((pricing.priced(run.handles[model].model, tokens, replies).cost for model, _ in stage), 0.0)
    rates = pricing.rates(run.handles[run.config.arbiter].model)
    if rates:
        cost += rates[1] * JUDGE_MIN_TOKENS
    total = run.usage.cost + run.reserved + cost
    if total <= budget:
        return None
    names = ", ".join(f"{model}#{instance}" for model, instance in stage)
    return (f"stage {len(run.stages[number].stages) + 1} of round {number} ({names}) would cost about "
            f"{pricing.dollars(cost)}, taking the run to about {pricing.dollars(total)}, past the max cost of "
            f"{pricing.dollars(budget, exact=True)}: the round was judged on the members asked")


def confident_enough(run, leading: int, panel: int, probability: float) -> bool:
    """Under --min-p, whether the answer the panel leads with would have a
    calibrated p(right) at or above it, scored as a decisive stop reports it
    (agreement ``leading`` of the whole ``panel``, confidence the posterior);
    if not, more members are asked before the panel stops. True without
    --min-p or a calibration."""
    if run.config.min_p is None or run.calibration is None:
        return True
    p_right = calibrated.p_right(run.calibration, leading / panel, probability)
    return p_right is not None and p_right >= run.config.min_p


def decided_without_judge(run, number: int) -> bool:
    """Whether round ``number``'s answer is a decisive panel's, no judge asked (``decided``)."""
    staging = run.stages.get(number)
    return staging is not None and staging.without_judge


def decided(method: str, panel) -> tuple[Judgement, str] | None:
    """The judgement of a decisive round whose leading answer is a short
    answer (valid against the schema, if any): that answer, with no judge
    called. None when a judge is needed (not decisive, or free text)."""
    staging = panel.run.stages.get(panel.number)
    if staging is None or not staging.decisive:
        return None
    from .methods.vote import percent, tally_row

    answered, schema = panel.answered, panel.run.schema
    extracted = short_answers(answered, schema)
    groups = sorted(described(answered, extracted, staging.groups, schema), key=lambda g: -len(g.members))
    leader = groups[0]
    if not leader.short or leader.problem:
        return None
    probability = staging.stages[-1].probability
    asked = staging.stages[-1].asked
    share = len(leader.members) / panel.size
    others = [f"{g.answer} ({len(g.members)})" for g in groups[1:]]
    judgement = Judgement(
        synthesis=leader.answer,
        confidence=probability,
        analysis=f"{len(leader.members)} of the {asked} members asked gave this answer: the probability that "
                 f"it is the majority of all {panel.size} is {percent(probability)}, at or above the "
                 f"{percent(staging.threshold)} threshold, so no more members and no judge were asked.",
        dissent=("Other answers: " + ", ".join(others)) if others else "none",
    )
    judgement.details = Details() if method != "vote" else VoteDetails(
        tally=[tally_row(g, answered) for g in groups], winner=leader.answer, share=share,
        extracted=sum(a is not None for a in extracted),
    )
    Agreement(share, staging.source, staging.groups).record(judgement, answered)
    staging.without_judge = True
    return judgement, ""
