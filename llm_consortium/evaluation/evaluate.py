"""``llm consortium eval DATASET.jsonl``: is the consortium worth it on this
data? Questions with known short answers (numbers, letters, yes/no) are
answered by whole consortium runs of each method, and by baselines, and
scored by exact match (``evalreport`` computes and formats the report).

Rows:

* each member alone: its answer to the item, asked for an ``<answer>``
  block (the vote method's instruction);
* the best member sampled N times with a majority vote of its answers
  (Self-MoA / self-consistency, Li et al. 2025; N is ``--samples``, by
  default the number of members);
* the oracle: right when any member is right;
* each method (``vote``, ``arbiter``, ``council``): a whole run, every round
  until the method stops, through the engine itself.

Members are asked the same way in every row (the eval's system prompt
holds the ``<answer>`` instruction in every method), so each member's
first answer is one call shared by its own row, the Self-MoA samples and
the first round of every method: every row is scored on the same answers.

Every model call goes through a caching caller (``judging.Caller``): a reply
is stored in SQLite in llm's user directory (``consortium-eval.db``), keyed
by what was asked (the model, the system prompt and prompt, and the call's
role and instance, so two samples of one model differ), and a second run on
the same data makes no model call at all. For that each run's fence and id
(which seeds the council's shuffles) are derived from the item, so every
prompt of a replay is the same. Only successful replies are stored; within
one eval a failed call is not asked again.

Dollars are priced from each call's tokens (``pricing``), cached or not;
one unknown price makes the item's, and so the row's, cost unknown.
Wall-clock seconds per item are each run's critical path from its calls'
own seconds (members at once, then reviewers at once, then the arbiter),
so they are the same whether the calls were made or replayed, and exclude
waiting for ``--max-concurrency``.

Each row also counts the items it has no answer for (``failed``: scored as
wrong) and, for the methods, those where no judge could decide and the
members' majority answered (``fallback``: scored as that answer). Below the
table each such item is listed by number, with why.

The command itself is ``faces.eval_command``. llm imports this module on
every command, so it imports only the standard library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CACHE_FILE = "consortium-eval.db"


class DatasetError(ValueError):
    """A dataset that cannot be read as items: the message names the file, the line and why."""


@dataclass
class Item:
    prompt: str
    answer: str | dict  # a dict: a structured item, scored field by field
    schema: dict | None = None  # members answer in it (--schema)

    @property
    def structured(self) -> bool:
        return isinstance(self.answer, dict)


def field_hits(item: Item, text: str | None) -> list[bool]:
    """For a structured item: whether ``text`` (JSON) gives each of the
    expected object's top-level fields right, in its order. A value is right
    when it is the same JSON value, or, for a string or a number, the same
    short answer (``answers.is_correct``: "Paris" is "paris", 30 is 30.0)."""
    from ..core import schemas

    try:
        value = schemas.read_json(text or "")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return [False] * len(item.answer)
    return [key in value and same_value(value[key], expected) for key, expected in item.answer.items()]


def same_value(got, expected) -> bool:
    from ..core.answers import is_correct

    if got == expected and type(got) is type(expected):
        return True
    scalar = (str, int, float)
    if isinstance(got, scalar) and isinstance(expected, scalar) and not isinstance(got, bool) \
            and not isinstance(expected, bool):
        return is_correct(str(got), str(expected))
    return False


def item_right(item: Item, text: str | None, short: str | None) -> bool:
    """Whether an answer is right: a structured item's ``text`` every field
    right (``field_hits``), another item's ``short`` answer by exact match."""
    from ..core.answers import is_correct

    if item.structured:
        return all(field_hits(item, text))
    return is_correct(short, item.answer)


def structured_item(data: dict, where: str) -> Item:
    """A line with a ``schema``: an object schema, checked as --schema is,
    and an object ``answer`` to score its fields against."""
    from ..core import schemas
    from ..core.config import ConsortiumConfigError

    schema, answer = data["schema"], data["answer"]
    try:
        schemas.check(schema)
    except ConsortiumConfigError as exc:
        raise DatasetError(f"{where}: {str(exc).replace('--schema', 'its schema', 1)}") from None
    if not isinstance(answer, dict) or not answer:
        raise DatasetError(f'{where}: with a schema, the answer must be a JSON object of the fields expected')
    return Item(data["prompt"], answer, schema)


def needs_arbiter(methods: list[str]) -> bool:
    """Whether any of ``methods`` may call the arbiter: all do (the vote when
    there is no clear majority)."""
    return bool(methods)


def sample_path() -> Path:
    """The sample dataset inside the installed package."""
    from importlib import resources

    return Path(str(resources.files(__package__).joinpath("data", "sample-eval.jsonl")))


def read_dataset(path: Path) -> list[Item]:
    """The items of a JSON Lines file; a bad line stops with its number."""
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(data, dict) or not isinstance(data.get("prompt"), str) or data.get("answer") is None:
                raise DatasetError(f'{path}, line {number}: expected {{"prompt": "...", "answer": "..."}}')
            items.append(structured_item(data, f"{path}, line {number}") if "schema" in data
                         else Item(data["prompt"], str(data["answer"])))
    if not items:
        raise DatasetError(f"{path} has no items")
    return items
