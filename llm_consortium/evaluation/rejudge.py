"""``llm consortium rejudge RUN_ID``: judge a past run's member answers
again, with another method or arbiter, without asking the members again.

The answers are the last round's, as recorded (``store.load_run``). The
new run is recorded like any other, with ``parent_run_id`` naming the run
it judged again; its member records are the reused answers (0 attempts, no
tokens or dollars: they were not paid again), so its cost is the judging's.
The council's peer review still asks the members, as reviewers.

The command itself is ``faces.rejudge_command``.
"""

from __future__ import annotations


def prepared(config, record):
    """The orchestrator, recording, and the run, validated and with its models resolved, before any call."""
    from ..core.engine import ConsortiumOrchestrator
    from ..storage.recorder import RunRecorder

    orchestrator = ConsortiumOrchestrator(config=config, observers=[RunRecorder(record.name)])
    run = orchestrator.prepare(record.prompt, system=record.settings.system)
    run.parent_run_id = record.run_id
    return orchestrator, run


def in_members_order(answers: list, run) -> list:
    """``answers`` in the members' order, as a run asks them (the judges see them so)."""
    order = {member: index for index, member in enumerate(run.members)}
    return sorted(answers, key=lambda answer: order.get((answer[0].model, answer[0].instance), len(order)))


def reused_answers(record) -> list:
    """(member result, the prompt it answered) for each member call of the
    recorded run's (``RunRecord``) last round that has one; no tokens,
    dollars or attempts: not asked again."""
    from ..core.results import MemberResult

    rounds = [r for r in record.rounds if any(c.role == "member" for c in r.calls)]
    if not rounds:
        return []
    return [
        (MemberResult(call.model, call.instance, call.text, call.error, attempts=0, cancelled=call.cancelled),
         call.prompt)
        for call in rounds[-1].calls if call.role == "member"
    ]
