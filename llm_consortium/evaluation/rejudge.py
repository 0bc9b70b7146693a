"""``llm consortium rejudge RUN_ID``: judge a past run's member answers
again, with another method or arbiter, without asking the members again.

The answers are the last round's, as recorded (``recorder.get_run``). The
new run is recorded like any other, with ``parent_run_id`` naming the run
it judged again; its member records are the reused answers (0 attempts, no
tokens or dollars: they were not paid again), so its cost is the judging's.
The council's peer review still asks the members, as reviewers.

llm imports this module on every command, so it imports only click and the
methods' choice (which reads their names, not their modules) at the top.
"""

from __future__ import annotations

import json

import click

from ..faces.choices import MethodOption


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
    from ..core.config import ConsortiumConfig, ConsortiumConfigError, ConsortiumError
    from ..storage.store import AmbiguousRunId, get_run

    try:
        record = get_run(run_id)
    except AmbiguousRunId:
        raise click.ClickException(f"{run_id!r} matches several runs: give more of the id") from None
    if record is None:
        raise click.ClickException(f"No run matches {run_id!r} (see 'llm consortium runs')")
    answers = reused_answers(record)
    if not answers:
        raise click.ClickException(f"Run {record['id'][:8]} has no member answers to judge")
    settings = dict(record["config"])
    settings.update({k: v for k, v in (("method", method), ("arbiter", arbiter)) if v})
    try:
        config = ConsortiumConfig.from_dict(settings)
        orchestrator, run = prepared(config, record)
    except ConsortiumConfigError as exc:
        raise click.ClickException(str(exc)) from None

    from ..core.runner import run_coroutine

    # in the members' order, as a run asks them (the judges see them so)
    order = {member: index for index, member in enumerate(run.members)}
    answers.sort(key=lambda answer: order.get((answer[0].model, answer[0].instance), len(order)))
    try:
        result = run_coroutine(orchestrator.execute(run, answers))
    except ConsortiumError as exc:
        raise click.ClickException(f"{exc} (recorded as run {run.run_id})") from None
    if json_:
        click.echo(json.dumps(result, indent=2))
    else:
        from ..faces.display import summary
        from ..core.safetext import printable

        click.echo(summary(result), err=True)
        click.echo(printable(result["synthesis"]["synthesis"]))
    click.echo(f"Recorded as run {run.run_id}, a rejudging of run {record['id']} ({config.method}, arbiter "
               f"{config.arbiter}).", err=True)


def prepared(config, record):
    """The orchestrator, recording, and the run, validated and with its models resolved, before any call."""
    from ..core.engine import ConsortiumOrchestrator
    from ..storage.recorder import RunRecorder

    orchestrator = ConsortiumOrchestrator(config=config, observers=[RunRecorder(record.get("name"))])
    run = orchestrator.prepare(record["prompt"], system=record["system"])
    run.parent_run_id = record["id"]
    return orchestrator, run


def reused_answers(record: dict) -> list:
    """(member result, the prompt it answered) for each member call of the run's
    last round that has one; no tokens, dollars or attempts: not asked again."""
    from ..core.results import MemberResult

    rounds = [r for r in record["rounds"] if any(c["role"] == "member" for c in r["calls"])]
    if not rounds:
        return []
    return [
        (MemberResult(call["model"], call["instance"], call["text"], call["error"], attempts=0,
                      cancelled=call["cancelled"]), call["prompt"])
        for call in rounds[-1]["calls"] if call["role"] == "member"
    ]
