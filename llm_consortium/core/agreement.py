"""How many members gave the same answer, however they worded it.

Agreement is the share of the members in the largest group of equivalent
answers: 1.0 when every member says the same thing, 0.67 for a 2-1 split.
The groups come from one of two sources, recorded with them:

* ``exact``: each answer's short final answer (``answers.extract_answer``,
  or the canonical JSON under a schema), compared after normalisation. It is
  used first when it can be trusted on its own: every answer was extracted
  and they are all alike, or all of a kind that normalises exactly (a
  number, a letter, yes/no, a JSON value);
* ``arbiter``: the arbiter's ``<groups>`` section, one line per group of
  responses, by the labels its prompt gave them ("Response A, Response C").

When neither applies, the exact tally of the answers that could be
extracted is used (the way agreement was always measured); with fewer than
two answers, or nothing to group by, agreement is unknown (None).

The same groups, each with its answer as a member wrote it (``Group``),
are what the vote counts and what decides when no judge can be read
(``judging.members_verdict``), out of the panel's size (``judging.Panel.size``).

The arbiter's reply is model text: its groups are read defensively. Only
the labels of this round's answers count, each once (in the first group
that names it); members it places nowhere are groups of their own; and a
section that names no label at all is no grouping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import schemas
from .answers import extract_answer, without_answer_tags, written_answer
from .ballots import label, label_pattern
from .parsing import read_sections

# Short answers that compare exactly once normalised: a letter, yes/no, a
# number, and the JSON literals (canonical JSON, under a schema).
_EXACT_KIND = re.compile(r"[A-J]|yes|no|-?\d+(?:\.\d+)?|-?\d+/\d+|true|false|null")
# Canonical JSON objects, arrays and strings (a normalised phrase never
# starts with punctuation, so these are JSON values under a schema).
_JSON_VALUE = re.compile(r'[{\["]')


@dataclass
class Agreement:
    """Groups of members (indices into the answers), the largest first, and
    where they came from; ``share`` is None when agreement is unknown."""

    share: float | None
    source: str | None = None
    groups: list[list[int]] | None = None
    note: str | None = None

    def record(self, judgement, answered) -> None:
        """Set ``judgement``'s agreement, and its groups in its details."""
        judgement.agreement = self.share
        judgement.details.agreement = self.to_dict(answered)

    def to_dict(self, answered) -> dict:
        """The agreement as a judgement's details record it: each group's
        members by label, model id and instance."""
        return {
            "share": self.share,
            "source": self.source,
            "groups": [
                [{"label": label(i), "model": answered[i].model, "instance": answered[i].instance} for i in group]
                for group in self.groups or []
            ],
            "note": self.note,
        }


@dataclass
class Group:
    """Members that gave one answer (indices into the answers), and that
    answer as one of them wrote it, for people to read: "42.0 km", never
    the "42" it is compared by, nor a member's whole reply when a short
    answer was found."""

    members: list[int]
    answer: str
    # Whether the answer is a short answer (JSON under a schema), not a whole reply.
    short: bool
    # Under a schema: why the answer is not valid against it (None: valid).
    problem: str | None = None

    def names(self, answered) -> list[str]:
        """The group's members as "model#instance"."""
        return [f"{answered[i].model}#{answered[i].instance}" for i in self.members]


def described(answered, extracted: list, groups: list[list[int]], schema: dict | None) -> list[Group]:
    """``groups`` of ``answered`` (indices), each with its answer as written:
    the short answer of its first member that gave one (under a schema,
    the JSON of its first member whose JSON is valid, else of the first
    with JSON), else the group's shortest reply; tags removed either way."""
    result = []
    for group in groups:
        texts = [answered[i].text for i in group if extracted[i] is not None]
        if schema is not None:
            checked = [(schemas.problem(text, schema), text) for text in texts]
            found = min(checked, key=lambda pair: pair[0] is not None, default=None)
            if found is not None:
                why, text = found
                result.append(Group(group, json.dumps(schemas.read_json(text), ensure_ascii=False), True, why))
                continue
        elif texts:
            result.append(Group(group, without_answer_tags(written_answer(texts[0])), True))
            continue
        shortest = min((without_answer_tags(answered[i].text) for i in group), key=len)
        result.append(Group(group, shortest, False, None if schema is None else schemas.problem(shortest, schema)))
    return result


def short_answers(answered, schema: dict | None) -> list[str | None]:
    """Each answer's short answer (None where there is none): under a
    schema the answer is its JSON, compared as a value."""
    extract = extract_answer if schema is None else schemas.canonical
    return [extract(m.text) for m in answered]


def measure(answered, extracted: list, arbiter_reply: str | None = None, members: int | None = None) -> Agreement:
    """The agreement among ``answered`` (``MemberResult``s that answered).

    ``extracted``: each answer's short answer (``short_answers``).
    ``arbiter_reply``: the arbiter's raw reply whose synthesis was used, if
    any. ``members``: the denominator, the whole panel (members that did
    not answer agree with no one); by default the number of answers. One
    answer of a larger panel is "1 of n"; one member alone has no agreement.
    """
    total = members or len(answered)
    if len(answered) == 1 and total > 1:
        return _share([[0]], "exact", total, "only one member answered")
    if len(answered) < 2:
        return Agreement(None, note="fewer than two answers")
    keys = [answer_key(m.text, a) for m, a in zip(answered, extracted)]
    if exact_enough(keys, extracted):
        return _share(exact_groups(keys), "exact", total)
    groups, note = parse_groups(arbiter_reply, len(answered)) if arbiter_reply else (None, None)
    if groups is not None:
        return _share(groups, "arbiter", total, note)
    if sum(a is not None for a in extracted) >= 2:
        return _share(exact_groups(keys), "exact", total, note)
    return Agreement(None, note=note or "the answers could not be grouped: no short answers, and no groups "
                                        "from the arbiter")


def exact_enough(keys: list[str], extracted: list) -> bool:
    """Whether comparing the answers' keys (``answer_key``) groups them
    reliably on its own: they are all alike, or every answer has a short
    answer of a kind that compares exactly. Otherwise a judge's grouping
    is worth asking for (two members may word one answer differently)."""
    return len(set(keys)) == 1 or (None not in extracted and all(map(exact_kind, extracted)))


def answer_key(text: str, short: str | None) -> str:
    """What an answer is compared by: its short answer, else its whole text,
    case, spacing and a final full stop aside (identical texts agree)."""
    return short if short is not None else " ".join(text.lower().split()).rstrip(".")


def exact_kind(answer: str) -> bool:
    """Whether a short answer compares exactly (not a phrase, which two
    members may word differently)."""
    return _EXACT_KIND.fullmatch(answer) is not None or _JSON_VALUE.match(answer) is not None


def exact_groups(keys: list[str]) -> list[list[int]]:
    """Members with equal keys (``answer_key``) together, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def parse_groups(reply: str, answers: int) -> tuple[list[list[int]] | None, str | None]:
    """The arbiter's ``<groups>`` for ``answers`` answers, labelled
    ``label(0)`` ..., as (groups, note on what was left out), or
    (None, why) when the reply has no usable groups.

    One line is one group; labels are found in it as whole tokens, any case.
    Unknown labels are ignored, a label already placed is not moved, and
    every answer left unplaced is a group of its own. Reading stops once
    every answer is placed, so a huge section costs no more than it must.
    """
    section = read_sections(reply).get("groups", "")
    if not section:
        return None, "the arbiter gave no groups"
    labels = [label(i) for i in range(answers)]
    index = {lab.casefold(): i for i, lab in enumerate(labels)}
    pattern = label_pattern(labels)
    placed: dict[int, int] = {}  # answer -> its group
    groups: list[list[int]] = []
    repeated = False
    for line in section.splitlines():
        group: list[int] = []
        for found in pattern.finditer(line):
            i = index[" ".join(found.group(0).split()).casefold()]
            if i in placed:
                repeated = repeated or placed[i] != len(groups)
                continue
            placed[i] = len(groups)
            group.append(i)
        if group:
            groups.append(group)
        if len(placed) == answers:
            break
    if not groups:
        return None, "the arbiter's groups named none of the responses"
    unplaced = [i for i in range(answers) if i not in placed]
    groups += [[i] for i in unplaced]
    notes = []
    if repeated:
        notes.append("a response the arbiter placed in more than one group was kept in its first")
    if unplaced:
        notes.append(f"{', '.join(labels[i] for i in unplaced)} not placed by the arbiter: counted alone")
    return groups, "; ".join(notes) or None


def _share(groups: list[list[int]], source: str, total: int, note: str | None = None) -> Agreement:
    groups = sorted(groups, key=len, reverse=True)  # stable: on a tie, the group seen first
    return Agreement(len(groups[0]) / total, source, groups, note)
