"""``llm consortium audit RUN_ID``: the command, its options and what it
prints (``evaluation.audit`` says what an audit does and records).

llm imports this module on every command, so it imports only click at the top.
"""

from __future__ import annotations

import json

import click

#: The most characters of a winning answer shown on an order's line (an arbiter's answer can be long).
ANSWER_CHARS = 60


@click.command()
@click.argument("run_id")
@click.option("--shuffles", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many other orders to judge the answers in (one arbiter call or more each)")
@click.option("--arbiter", help="The arbiter to audit (default: the run's own)")
@click.option("--seed", type=int, help="The seed of the orders (default: a random one, recorded)")
@click.option("json_", "--json", is_flag=True, help="Print the audit as JSON on stdout")
def audit(run_id, shuffles, arbiter, seed, json_):
    """Audit the judge of RUN_ID (or a unique prefix) for position bias: its
    member answers are judged again in other orders, relabelled, by the same
    method and arbiter; the members are not asked again. Prints how often the
    winning answer changed (the flip rate, with its 95 % interval) and records
    the audit with the run (see 'llm consortium inspect').

    \b
    llm consortium audit 3f2a
    llm consortium audit 3f2a --shuffles 10
    """
    from ..core.config import ConsortiumConfigError
    from ..evaluation.audit import AuditError, audit as run_audit
    from ..evaluation.rejudge import judging_config
    from ..storage.store import RunNotFound, find_run, logging_enabled, record_of_row, save_audit

    try:
        record = record_of_row(find_run(run_id))
    except RunNotFound as exc:
        raise click.ClickException(str(exc)) from None

    def progress(number, shuffle):
        click.echo(shuffle_line(number, shuffle), err=True)

    try:
        result = run_audit(record, shuffles=shuffles, seed=seed, config=judging_config(record, arbiter=arbiter),
                           on_shuffle=None if json_ else progress)
    except (AuditError, ConsortiumConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    stored = logging_enabled()
    if stored:
        save_audit(record.run_id, result)
    if json_:
        click.echo(json.dumps(result.model_dump(), indent=2))
    else:
        for line in audit_lines(result):
            click.echo(line)
    click.echo(f"Recorded with run {record.run_id}." if stored else "Not recorded: llm logs are off.", err=True)


def shuffle_line(number: int, shuffle) -> str:
    """One judging of an audit, for the terminal."""
    from ..core.safetext import cut, single_line

    order = ", ".join(shuffle.order)
    if shuffle.error:
        return single_line(f"Order {number} ({order}): failed: {shuffle.error}")
    won = ", ".join(shuffle.winner) if shuffle.winner else "not identified"
    answer = f" ({cut(shuffle.answer, ANSWER_CHARS + 1)})" if shuffle.answer else ""
    confidence = "-" if shuffle.confidence is None else f"{shuffle.confidence:.2f}"
    fallback = " · the members' majority decided" if shuffle.fallback else ""
    return single_line(f"Order {number} ({order}): winner {won}{answer} · confidence {confidence}{fallback}")


def audit_lines(result) -> list[str]:
    """What the terminal shows of an audit (the command, and ``inspect``): its result in a line, a note if any."""
    from ..core.safetext import single_line
    from ..evaluation.audit import confidence_spread

    spread = confidence_spread(result)
    confidence = f"; {spread}" if spread else ""
    count = len(result.shuffles)
    head = f"Judge audit ({count} order{'s' if count != 1 else ''}, {result.method}, arbiter {result.arbiter})"
    if result.flip_rate is None:
        lines = [f"{head}: the winning answer could not be identified in any order{confidence}"]
    else:
        low, high = result.interval
        against = "the run's own" if result.reference_from == "run" else "the most common"
        lines = [f"{head}: the winner differed from {against} in {result.flips} of {result.judged} orders: "
                 f"flip rate {result.flip_rate:.2f} (95 % interval {low:.2f}–{high:.2f}){confidence}"]
        if result.judged < len(result.shuffles):
            lines.append(f"  {len(result.shuffles) - result.judged} orders had no identified winner "
                         "(a failed judging, or an answer matching no member's)")
    return [single_line(line) for line in lines]
