"""``llm consortium rejudge RUN_ID``: the command, its options and what it
prints (``evaluation.rejudge`` says what a rejudging reuses and records).

llm imports this module on every command, so it imports only click at the top.
"""

from __future__ import annotations

import json
import sys

import click

from ..core.outcome import exit_code
from .choices import MethodOption


@click.command()
@click.argument("run_id")
@click.option("--method", cls=MethodOption, help="How to judge the answers (default: the run's own method)")
@click.option("--arbiter", help="The arbiter model (default: the run's own arbiter)")
@click.option("json_", "--json", is_flag=True, help="Print the full result as JSON on stdout")
def rejudge(run_id, method, arbiter, json_):
    """Judge RUN_ID's member answers again (RUN_ID or a unique prefix), with
    --method or --arbiter; the members are not asked again. The result is
    recorded as a new run linked to RUN_ID (see 'llm consortium inspect').

    \b
    llm consortium rejudge 3f2a --method council
    llm consortium rejudge 3f2a --arbiter gpt-4o
    """
    from ..core.config import ConsortiumConfigError, ConsortiumError
    from ..evaluation.rejudge import in_members_order, judging_config, prepared, reused_answers
    from ..storage.store import RunNotFound, find_run, record_of_row

    try:
        record = record_of_row(find_run(run_id))
    except RunNotFound as exc:
        raise click.ClickException(str(exc)) from None
    answers = reused_answers(record)
    if not answers:
        raise click.ClickException(f"Run {record.run_id[:8]} has no member answers to judge")
    try:
        config = judging_config(record, method=method, arbiter=arbiter)
        orchestrator, run = prepared(config, record)
    except ConsortiumConfigError as exc:
        raise click.ClickException(str(exc)) from None

    from ..core.runner import run_coroutine

    answers = in_members_order(answers, run)
    from ..core.record import record_of, result_dict

    try:
        run_coroutine(orchestrator.execute(run, answers))
    except ConsortiumError as exc:
        raise click.ClickException(f"{exc} (recorded as run {run.run_id})") from None
    rejudged = record_of(run)
    if json_:
        click.echo(json.dumps(result_dict(rejudged), indent=2))
    else:
        from .display import summary
        from ..core.safetext import printable

        click.echo(summary(rejudged), err=True)
        if rejudged.outcome.has_answer:
            click.echo(printable(rejudged.synthesis.synthesis))
    click.echo(f"Recorded as run {run.run_id}, a rejudging of run {record.run_id} ({config.method}, arbiter "
               f"{config.arbiter}).", err=True)
    # The exit statuses of a run (README: What a run came to): 1 with no answer, 3 under --strict.
    if not rejudged.outcome.has_answer:
        from .model import no_answer_message

        raise click.ClickException(no_answer_message(rejudged))
    code = exit_code(rejudged.outcome.status, config.strict, True)
    if code:
        sys.exit(code)
