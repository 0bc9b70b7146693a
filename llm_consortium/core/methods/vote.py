"""Majority vote (self-consistency, Wang et al. arXiv 2203.11171).

Each member ends its answer with a short final answer in ``<answer>`` tags;
the answers are extracted, normalised and grouped (``agreement.Group``).
When the largest group's share of the members reaches the confidence
threshold, its answer is the round's answer and the arbiter is not called
at all. That answer is the group's short answer as a member wrote it
("42"), never a member's whole reply: the vote was on the answer, not on
the prose, links or instructions around it. Otherwise (a tie, no clear
majority, or answers that could not be extracted) the arbiter reads the
answers and the tally, and the details say why it was asked.

The share is out of every member of the round less those a --quorum
cancelled (``Panel.size``): members that failed, and
answers with no short answer, vote for nothing; 2 of 3 members agreeing is
67 %, not 2 of 2. Under a schema the answer is the JSON, compared as a
value, and only answers valid against the schema count: an invalid answer
votes for nothing, so one valid answer of three is 33 %, below any usual
threshold, and the arbiter decides (and its answer must be valid too).
When no answer is valid the run fails: nothing valid could win. Under an
object schema the vote is by field instead (``judge_fields``, at the end):
each top-level field is voted on among the valid objects, and the arbiter
settles only the fields the vote could not decide.

Confidence is the measured vote share when the vote decides, and the
arbiter's own confidence when it does not. ``agreement`` is measured as
for every method (``agreement.measure``), over the same members. The
tally in the details lists every answer as a member wrote it, with the
members who gave it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .. import prompts, schemas
from ..agreement import Group, answer_key, described, exact_groups, short_answers
from ..answers import extract_answer
from ..ballots import label
from ..config import ConsortiumError
from ..parsing import parse_arbiter
from ..results import Judgement, VoteDetails, tally_rows
from ..safetext import cut, single_line
from .arbiter import extended_arbiter_prompt, measured_agreement
# The budget counts the arbiter's call, as for the arbiter: made when the vote cannot decide.
from .arbiter import judges  # noqa: F401

NAME = "vote"
HELP = "the members' most common short answer wins, or the arbiter decides when there is no clear majority"
#: Where ``eval`` lists it by default: the least judging first (vote, arbiter, council).
EVAL_ORDER = 0
MEMBER_INSTRUCTIONS = (
    "End your reply with your final short answer inside <answer></answer> tags: "
    "just the answer (a number, a letter, yes/no or a few words), nothing else, "
    "for example <answer>42</answer>."
)
# The most characters of a member's schema error quoted in the run's error
# (jsonschema quotes the value, which a member may have made huge).
MAX_REASON_CHARS = 300


async def judge(panel):
    answered = panel.answered
    schema = panel.run.schema
    members = panel.size
    extracted = short_answers(answered, schema)
    keys = [answer_key(m.text, short) for m, short in zip(answered, extracted)]
    groups = sorted(described(answered, extracted, exact_groups(keys), schema), key=lambda g: -len(g.members))
    if schema is not None and all(g.problem for g in groups):
        why = single_line(groups[0].problem)
        raise ConsortiumError("No member's answer is valid against the schema: "
                              + (why if len(why) <= MAX_REASON_CHARS else why[:MAX_REASON_CHARS - 1] + "…"))
    if schema is not None and valid_objects(answered, groups):
        return await judge_fields(panel, groups)
    counted = [g for g in groups if g.short and g.problem is None]
    invalid = sum(len(g.members) for g in groups if g.problem)
    reason = fallback_reason(counted, members, panel.config.confidence_threshold, invalid)
    winner = counted[0] if counted and not tied(counted) else None
    details = VoteDetails(
        tally=[tally_row(g, answered) for g in groups],
        winner=winner.answer if winner else None,
        share=len(winner.members) / members if winner else 0.0,
        extracted=sum(short is not None for short in extracted),
        arbiter_called=reason is not None,
        fallback_reason=reason,
    )
    if reason is None:
        judgement = majority_judgement(winner, groups, members, panel.config.confidence_threshold)
        raw = ""
    else:
        judgement, raw = await panel.arbitrate(arbiter_prompt(panel, groups, reason))
    judgement.details = details
    measured_agreement(panel, raw).record(judgement, answered)
    return judgement, raw


def render(details: dict) -> list[dict]:
    """The tally, with the winner marked and who gave each answer; under an
    object schema, each field's tally and agreement; why the arbiter was asked."""
    items = []
    rows = tally_rows(details)
    if rows:
        winner = details.get("winner")
        items.append({"kind": "tally", "title": "Vote",
                      "rows": [{**row, "winner": row["answer"] == winner} for row in rows]})
    for vote in details.get("fields") or []:
        name = cut(single_line(vote["field"]), MAX_FIELD_CHARS)
        items.append({"kind": "tally", "title": f"Field {name}: {vote['count']} of {vote['members']} agree, "
                                                f"{SETTLED[vote['settled_by']]}",
                      "rows": [{**row, "winner": row["answer"] == vote["value"]} for row in vote["tally"]]})
    if details.get("whole_object"):
        items.append({"kind": "note", "label": "Fields combined", "text": details["whole_object"]})
    if details.get("fallback_reason"):
        items.append({"kind": "note", "label": "Arbiter asked because", "text": details["fallback_reason"]})
    return items


def answer(judgement) -> str | None:
    """The vote's winner when the vote decided (its synthesis is the
    winner's text without the ``<answer>`` tags), else the answer in the
    arbiter's synthesis."""
    details = judgement.details
    if isinstance(details, VoteDetails) and details.winner is not None and not details.arbiter_called:
        return details.winner
    return extract_answer(judgement.synthesis)


def tied(counted: list[Group]) -> bool:
    """Whether the largest groups that count are as large as each other."""
    return len(counted) > 1 and len(counted[0].members) == len(counted[1].members)


def fallback_reason(counted: list[Group], members: int, threshold: float, invalid: int) -> str | None:
    """Why the vote cannot decide on its own, or None when it can.
    ``counted``: the groups whose answers count, largest first."""
    votes = sum(len(g.members) for g in counted)
    if votes < 2:
        if members < 2:
            return "only one member answered: there is nothing to vote on"
        if invalid:
            return f"only {votes} of {members} answers are valid against the schema"
        return f"answers could not be extracted ({votes} of {members})"
    top = len(counted[0].members)
    if tied(counted):
        return f"no majority: the most common answers are tied, {top} of {members} each"
    share = top / members
    if share < threshold:
        also = f"; {invalid} not valid against the schema" if invalid else ""
        return f"{top} of {members} agree ({percent(share)}), below the {percent(threshold)} threshold{also}"
    return None


def percent(share: float) -> str:
    """0.6667 -> "67 %"."""
    return f"{share * 100:.0f} %"


def tally_row(group: Group, answered) -> dict:
    """One line of the tally as the details keep it: the answer as written,
    how many gave it and who, and why it did not count (None if it did)."""
    note = None
    if group.problem:
        note = f"not valid against the schema: {group.problem}"
    elif not group.short:
        note = "no short answer"
    return {"answer": group.answer, "count": len(group.members), "members": group.names(answered), "note": note}


def majority_judgement(winner: Group, groups: list[Group], members: int, threshold: float) -> Judgement:
    """The vote's own judgement, no arbiter: the winning answer as written."""
    share = len(winner.members) / members
    others = [f"{g.answer} ({len(g.members)})" for g in groups if g is not winner]
    return Judgement(
        synthesis=winner.answer,
        confidence=share,
        analysis=f"Majority vote: {len(winner.members)} of {members} members agree ({percent(share)}) on "
                 f"{winner.answer}, at or above the {percent(threshold)} threshold.",
        dissent=("Other answers: " + ", ".join(others)) if others else "none",
    )


def arbiter_prompt(panel, groups: list[Group], reason: str) -> str:
    """The arbiter's usual prompt followed by the vote tally, fenced like the answers.

    The tally is computed from member text, so it is untrusted too: it sits in
    a fenced block of its own.
    """
    return extended_arbiter_prompt(
        panel, "vote_arbiter", reason=reason,
        tally=prompts.fenced("Vote tally", "\n".join(tally_lines(groups)), panel.run.fence),
    )


def tally_lines(groups: list[Group]) -> list[str]:
    """The tally as the arbiter reads it: each answer that counts, with the
    labels of the responses that gave it; then those that do not count."""
    def labels(found: list[Group]) -> str:
        return ", ".join(label(i) for g in found for i in g.members)

    lines = [f"{g.answer}: {len(g.members)} ({labels([g])})" for g in groups if g.short and not g.problem]
    invalid = [g for g in groups if g.problem]
    missing = [g for g in groups if not g.short and not g.problem]
    if invalid:
        lines.append(f"not valid against the schema: {labels(invalid)}")
    if missing:
        lines.append(f"no short answer found: {labels(missing)}")
    return lines


# Per-field consensus under an object schema: each top-level field is voted
# on separately among the members' valid objects, and the arbiter settles
# only the fields the vote could not decide.

#: The most characters of a field's name shown (a member may invent keys).
MAX_FIELD_CHARS = 60
#: A field a member's object leaves out: a vote for leaving it out.
ABSENT = "(absent)"
SETTLED = {"vote": "decided by the vote", "arbiter": "settled by the arbiter",
           "plurality": "the most common value (the arbiter did not settle it)"}


@dataclass
class FieldVote:
    """One top-level field: each value the valid objects gave it (canonical
    JSON, or ``ABSENT``) with its members (indices), most common first."""

    name: str
    values: list[tuple[str, list[int]]]
    decided: bool
    reason: str | None  # why the vote did not decide it (None: it did)
    value: str | None = None  # the value chosen, canonical JSON or ABSENT
    settled_by: str = "vote"

    def row(self, answered, members: int) -> dict:
        """The field as the details keep it: its tally, the value chosen, and its agreement."""
        chosen = next((m for v, m in self.values if v == self.value), [])
        return {"field": self.name, "value": self.value, "count": len(chosen), "members": members,
                "share": len(chosen) / members, "settled_by": self.settled_by,
                "tally": [{"answer": v, "count": len(m), "members": [f"{answered[i].model}#{answered[i].instance}"
                                                                     for i in m], "note": None}
                          for v, m in self.values]}


@dataclass
class FieldVoteDetails(VoteDetails):
    """The vote by field: each field's tally (``FieldVote.row``), and what
    happened when the fields' winners together were not valid (None: they were)."""

    fields: list[dict] = field(default_factory=list)
    whole_object: str | None = None


def valid_objects(answered, groups: list[Group]) -> dict[int, dict]:
    """The members' answers that are valid against the schema and JSON objects, by index."""
    found = {i: schemas.read_json(answered[i].text) for g in groups if g.problem is None and g.short
             for i in g.members}
    return {i: value for i, value in found.items() if isinstance(value, dict)}


def field_votes(objects: dict[int, dict], schema: dict, members: int, threshold: float) -> list[FieldVote]:
    """Each top-level field that a valid object gives, in the schema's order
    then the objects', voted on among the objects: decided when its most
    common value (leaving it out counts as one) has a share of the members at
    or above ``threshold`` and no other value as many."""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    names = dict.fromkeys([*properties, *(key for value in objects.values() for key in value)])
    votes = []
    for name in names:
        if not any(name in value for value in objects.values()):
            continue
        tally: dict[str, list[int]] = {}
        for i, value in objects.items():
            key = json.dumps(value[name], sort_keys=True, ensure_ascii=False) if name in value else ABSENT
            tally.setdefault(key, []).append(i)
        values = sorted(tally.items(), key=lambda pair: -len(pair[1]))
        top = len(values[0][1])
        shown = cut(single_line(name), MAX_FIELD_CHARS)
        if len(values) > 1 and len(values[1][1]) == top:
            reason = f"{shown}: tied, {top} of {members} each"
        elif top / members < threshold:
            reason = (f"{shown}: {top} of {members} agree ({percent(top / members)}), "
                      f"below the {percent(threshold)} threshold")
        else:
            reason = None
        votes.append(FieldVote(name, values, reason is None, reason, values[0][0] if reason is None else None))
    return votes


def combined(votes: list[FieldVote]) -> dict:
    """The object the fields' chosen values make (a field chosen absent is left out)."""
    return {v.name: json.loads(v.value) for v in votes if v.value is not None and v.value != ABSENT}


async def judge_fields(panel, groups: list[Group]):
    """The vote by field (see the module's doc): the decided fields' values,
    the disputed ones as the arbiter settles them. The result always
    validates: if the fields together do not, the arbiter is asked once for
    the whole object, and if its object is not valid either, the largest
    group of identical valid answers wins, and the run's notes say so."""
    answered, schema, members = panel.answered, panel.run.schema, panel.size
    threshold = panel.config.confidence_threshold
    objects = valid_objects(answered, groups)
    votes = field_votes(objects, schema, members, threshold)
    disputed = [v for v in votes if not v.decided]
    invalid = sum(len(g.members) for g in groups if g.problem)
    reason = None
    if disputed:
        reason = "fields the vote did not decide: " + "; ".join(v.reason for v in disputed)
        if invalid:
            reason += f"; {invalid} of {members} answers not valid against the schema"
    confidences = [len(next(m for val, m in v.values if val == v.value)) / members for v in votes if v.decided]
    raw, arbiter = "", None
    if disputed:
        try:
            arbiter, raw = await panel.arbitrate(fields_prompt(panel, groups, votes, reason))
        except ConsortiumError:  # its object was not valid even after a reminder: the fields stay unsettled
            arbiter = None
        # Only the arbiter's own object settles fields: when it failed and the
        # members' majority stood in (``fallback``), each keeps its plurality.
        settled = read_object(arbiter.synthesis) if arbiter and arbiter.fallback is None else None
        for vote in disputed:
            if settled is not None:
                vote.value = (json.dumps(settled[vote.name], sort_keys=True, ensure_ascii=False)
                              if vote.name in settled else ABSENT)
                vote.settled_by = "arbiter"
            else:
                vote.value, vote.settled_by = vote.values[0][0], "plurality"
        confidences.append(arbiter.confidence if settled is not None else
                           min(len(v.values[0][1]) / members for v in disputed))
    result = combined(votes)
    whole = None
    wrong = schemas.problem(json.dumps(result), schema)
    if wrong:
        whole, raw = await whole_object(panel, groups, wrong)
    synthesis = whole.synthesis if whole else json.dumps(result, ensure_ascii=False)
    judgement = Judgement(
        synthesis=synthesis,
        confidence=whole.confidence if whole else min(confidences, default=len(objects) / members),
        analysis=whole.analysis if whole else field_analysis(votes, members, arbiter),
        dissent=field_dissent(votes),
        notes=whole.notes if whole else [],
        # the arbiter could not settle the disputed fields (``members_verdict``): no judge
        # decided, and, as when the arbiter fails under any method, no round follows
        fallback=arbiter.fallback if arbiter and not whole else None,
        parse_ok=not (arbiter and arbiter.fallback is not None and not whole),
    )
    judgement.details = FieldVoteDetails(
        tally=[tally_row(g, answered) for g in groups],
        winner=synthesis,
        share=judgement.confidence if not disputed else 0.0,
        extracted=len(objects),
        arbiter_called=arbiter is not None or whole is not None,
        fallback_reason=reason,
        fields=[v.row(answered, members) for v in votes],
        whole_object=whole.notes[-1] if whole else None,
    )
    measured_agreement(panel, raw).record(judgement, answered)
    return judgement, raw


def read_object(text: str) -> dict | None:
    try:
        value = schemas.read_json(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def whole_object(panel, groups: list[Group], wrong: str) -> tuple[Judgement, str]:
    """The fields' values together are not valid (``wrong`` says why): the
    arbiter is asked once for the whole object; if its object is not valid
    either, the largest group of identical valid answers wins. Either way the
    judgement's last note says what happened."""
    schema, members = panel.run.schema, panel.size
    # Not ``wrong`` itself: jsonschema's message quotes member text, and the reason is not fenced.
    reason = "each field's most common value was found, but together they are not valid against the schema"
    outcome = await panel.call(panel.config.arbiter, arbiter_prompt(panel, groups, reason), role="arbiter")
    if not outcome.error:
        judgement = parse_arbiter(outcome.text, material=panel.material())
        if judgement.parse_ok and schemas.problem(judgement.synthesis, schema) is None:
            judgement.synthesis = json.dumps(schemas.read_json(judgement.synthesis), ensure_ascii=False)
            judgement.notes.append(f"The fields' values together were not valid against the schema ({wrong}): "
                                   "the arbiter wrote the whole object")
            return judgement, outcome.text
    largest = max((g for g in groups if g.problem is None and g.short), key=lambda g: len(g.members))
    share = len(largest.members) / members
    note = (f"The fields' values together were not valid against the schema ({wrong}), nor was the arbiter's "
            f"object: the largest group of identical valid answers wins ({len(largest.members)} of {members})")
    return Judgement(synthesis=largest.answer, confidence=share, notes=[note],
                     analysis=f"{len(largest.members)} of {members} members gave this whole answer."), ""


def field_analysis(votes: list[FieldVote], members: int, arbiter: Judgement | None) -> str:
    by_vote = [f"{v.name} ({len(v.values[0][1])} of {members})" for v in votes if v.settled_by == "vote"]
    other = [f"{v.name} ({SETTLED[v.settled_by]})" for v in votes if v.settled_by != "vote"]
    text = "Vote by field: " + ("; ".join(by_vote) + " decided by the vote" if by_vote
                                else "no field decided by the vote")
    if other:
        text += "; " + "; ".join(other)
    return text + (f".\n\n{arbiter.analysis}" if arbiter and arbiter.analysis else ".")


def field_dissent(votes: list[FieldVote]) -> str:
    others = [f"{v.name}: " + ", ".join(f"{val} ({len(m)})" for val, m in v.values if val != v.value)
              for v in votes if any(val != v.value for val, _ in v.values)]
    return "; ".join(others) or "none"


def fields_prompt(panel, groups: list[Group], votes: list[FieldVote], reason: str) -> str:
    """The arbiter's prompt to settle the disputed fields: its usual prompt,
    the whole answers' tally, and each field's tally, fenced (it is computed
    from member text); the decided fields are named, with their values."""
    def labels(members: list[int]) -> str:
        return ", ".join(label(i) for i in members)

    decided = ", ".join(cut(v.name, MAX_FIELD_CHARS) for v in votes if v.decided) or "none"
    lines = [f"Decided by the vote: {decided}", f"Disputed: {reason}", "", *tally_lines(groups), "", "By field:"] + [
        f"{cut(v.name, MAX_FIELD_CHARS)} ({'decided' if v.decided else 'disputed'}): "
        + "; ".join(f"{val}: {len(m)} ({labels(m)})" for val, m in v.values) for v in votes]
    return extended_arbiter_prompt(
        panel, "field_vote_arbiter",
        tally=prompts.fenced("Vote tally", "\n".join(lines), panel.run.fence),
    )
