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


def judging_config(record, **chosen):
    """The settings a recorded run (``RunRecord``) was made with, to judge
    its answers again: with ``chosen`` ones (method, arbiter) where given,
    and without --min-p (judging again has no calibration: it reports no
    p(right) and refuses nothing)."""
    from ..core.config import ConsortiumConfig

    settings = {key: value for key, value in record.config.items() if key != "min_p"}
    settings.update({key: value for key, value in chosen.items() if value})
    return ConsortiumConfig.from_dict(settings)


def prepared(config, record, *, recorded: bool = True):
    """The orchestrator, recording unless ``recorded`` is False (an audit's
    judgings), and the run, validated and with its models resolved, before any call."""
    from ..core.engine import ConsortiumOrchestrator
    from ..storage.recorder import RunRecorder

    observers = [RunRecorder(record.name)] if recorded else []
    orchestrator = ConsortiumOrchestrator(config=config, observers=observers)
    run = orchestrator.prepare(record.prompt, system=record.settings.system)
    run.parent_run_id = record.run_id
    return orchestrator, run


def in_members_order(answers: list, run) -> list:
    """``answers`` in the members' order, as a run asks them (the judges see them so)."""
    order = {member: index for index, member in enumerate(run.members)}
    return sorted(answers, key=lambda answer: order.get((answer[0].model, answer[0].instance), len(order)))


def reused_answers(record) -> list:
    """(member result, the prompt it answered) for each member of the
    recorded run's (``RunRecord``) last round that has member calls; no
    tokens, dollars or attempts: not asked again.

    The panel is the round's members as the result lists them, so that one
    not asked again after failing earlier (no call of it in that round) and
    one a quorum cancelled still count as what they were; a run with no
    result (its process died) has only its calls."""
    from ..core.results import MemberResult, Usage

    rounds = [r for r in record.rounds if any(c.role == "member" for c in r.calls)]
    if not rounds:
        return []
    calls = {(c.model, c.instance): c for c in rounds[-1].calls if c.role == "member"}
    members = rounds[-1].members or [
        MemberResult(model=c.model, instance=c.instance, text=c.text, error=c.error, cancelled=c.cancelled)
        for c in calls.values()
    ]
    return [
        (m.model_copy(update={"attempts": 0, "seconds": 0.0, "queued": 0.0, "usage": Usage()}),
         calls[(m.model, m.instance)].prompt if (m.model, m.instance) in calls else "")
        for m in members
    ]
