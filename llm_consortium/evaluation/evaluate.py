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
    answer: str


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
            items.append(Item(data["prompt"], str(data["answer"])))
    if not items:
        raise DatasetError(f"{path} has no items")
    return items
