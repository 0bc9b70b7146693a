"""``llm consortium eval DATASET.jsonl``: score the judging methods on questions
with known short answers (numbers, multiple-choice letters).

Every member answers every item once (round 1 only), asked to end with an
``<answer>`` block, and each answer is cached in SQLite in llm's user
directory (``consortium-eval.db``), keyed by (model, prompt, sample), where
the sample is the member's instance number (``-m model:3`` samples a model
three times). Every method is then replayed on the same answers and scored
offline by exact match:

* each member alone, and the oracle (right when any member is right);
* ``vote``: the plurality of the extracted answers; no model call (a tie
  counts as no answer);
* ``arbiter`` and ``council``: the methods themselves, run on the cached
  answers; their own calls (arbiter, reviewers, chairman) are cached in the
  same table, keyed by the prompt they were sent and their role, so a
  second run on the same data calls no model at all.

Tokens, seconds and calls are what each method costs on the whole dataset,
members included, whether or not this run had to make the calls (seconds
are summed over calls, not wall-clock time).

Every row also counts the items it has no answer for (``failed``: a member's
call failed, or every member's did, or the method raised; scored as wrong)
and, for the arbiter and the council, the items their judge could not decide
(``fallback``: the arbiter failed or its reply could not be read, so the
members' majority answered, as it would in a real run; scored as that
answer). Below the table each such item is listed by number, with why.

All items are asked at once, method after method, with at most
``--max-concurrency`` model calls in flight (the consortium's
``max_concurrency`` by default). Calls to one sync-only model, mostly local
ones, still take turns: they go through ``members.call_model`` like a run's.

llm imports this module on every command, so it imports only click and the
standard library at the top.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

METHOD_NAMES = ("vote", "arbiter", "council")
CACHE_FILE = "consortium-eval.db"
#: Stands for the run's random fence in cache keys, so replays find their prompts.
FENCE_KEY = "<fence>"


@dataclass
class Item:
    prompt: str
    answer: str


@dataclass
class Problem:
    """An item a row has no answer of its own for."""

    item: int  # numbered from 1 in the dataset's order
    prompt: str  # its first words
    kind: str  # "failed" (scored as wrong) or "fallback" (the members' majority answered)
    reason: str


EVERY_MEMBER_FAILED = "every member failed"
PROMPT_EXCERPT_CHARS = 60


@dataclass
class Score:
    """One row of the table: how a member or a method did on the dataset."""

    method: str
    kind: str  # "member", "oracle" or "method"
    items: int = 0
    correct: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.items if self.items else 0.0

    @property
    def failed(self) -> int:
        return sum(p.kind == "failed" for p in self.problems)

    @property
    def fallback(self) -> int:
        return sum(p.kind == "fallback" for p in self.problems)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def count(self, correct: bool) -> None:
        self.items += 1
        self.correct += int(correct)

    def note(self, number: int, item: Item, kind: str, reason: str) -> None:
        """Item ``number`` failed (``kind`` "failed") or fell back ("fallback"), because of ``reason``."""
        excerpt = " ".join(item.prompt.split())
        if len(excerpt) > PROMPT_EXCERPT_CHARS:
            excerpt = excerpt[:PROMPT_EXCERPT_CHARS].rstrip() + "…"
        self.problems.append(Problem(number, excerpt, kind, reason))

    def spend(self, calls: int, input_tokens: int, output_tokens: int, seconds: float) -> None:
        self.calls += calls
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.seconds += seconds

    def spend_members(self, answers) -> None:
        """The cost of the members' answers of one item (failed calls included)."""
        for member in answers:
            self.spend(1, member.usage.input, member.usage.output, member.seconds)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "accuracy": round(self.accuracy, 4),
            "tokens": self.tokens,
            "failed": self.failed,
            "fallback": self.fallback,
        }


@click.command(name="eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--sample", is_flag=True, help="Use the 40-item sample dataset that ships with the plugin")
@click.option("--consortium", "consortium_name", help="A saved consortium to evaluate")
@click.option("-m", "--model", "models", multiple=True, help="Member model (repeatable; model:3 for three samples)")
@click.option("--arbiter", help="Arbiter model (the council's chairman too)")
@click.option("--methods", default=",".join(METHOD_NAMES), show_default=True,
              help="Comma-separated methods to score besides each member and the oracle")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items")
@click.option("--max-concurrency", metavar="N",
              help="Most model calls in flight at once, across all items and methods (default: the "
                   "consortium's max_concurrency, 32 unless saved otherwise); a sync-only model "
                   "still answers one call at a time")
@click.option("json_", "--json", is_flag=True, help="Print the results as JSON")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Save a chart of accuracy against tokens per method (needs matplotlib)")
def eval_command(dataset, sample, consortium_name, models, arbiter, methods, limit, max_concurrency, json_, plot):
    """Score each member, the oracle and the judging methods on DATASET.

    DATASET is JSON Lines: {"prompt": ..., "answer": ...} per line, with
    short answers (numbers, letters) compared by exact match. Member answers
    and method calls are cached, so a second run costs no model call.

    All items are asked at once; --max-concurrency bounds the model calls
    in flight across all items and methods. The failed column counts the
    items a row has no answer for (scored as wrong); fallback, those whose
    arbiter failed or could not be read, so the members' majority answered
    (scored as that answer). Both are listed, with why, below the table.

    \b
    llm consortium eval data.jsonl -m model-a -m model-b -m model-c --arbiter model-d
    llm consortium eval data.jsonl --consortium NAME --methods vote,council --json
    llm consortium eval --sample --consortium NAME --limit 10
    """
    if bool(dataset) == sample:
        raise click.UsageError("Give a DATASET file or --sample (the dataset that ships with the plugin), not both")
    if sample:
        dataset = sample_path()
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.ClickException("--plot needs matplotlib: pip install matplotlib") from None
    chosen = parse_methods(methods)
    items = read_dataset(dataset)[:limit]
    config, handles = resolve(consortium_name, models, arbiter, max_concurrency, with_arbiter=needs_arbiter(chosen))

    from .runner import run_coroutine

    evaluation = Evaluation(config, handles, progress=Progress())
    scores = run_coroutine(evaluation.run(items, chosen))
    if json_:
        click.echo(json.dumps({
            "dataset": str(dataset),
            "items": len(items),
            "members": evaluation.member_names,
            "arbiter": config.arbiter if needs_arbiter(chosen) else None,
            "new_calls": evaluation.new_calls,
            "failed_calls": evaluation.failed_calls,
            "max_concurrency": config.max_concurrency,
            "results": [s.to_dict() for s in scores],
        }, indent=2))
    else:
        click.echo(table(scores))
        if any(s.problems for s in scores):
            click.echo("\n" + problem_list(scores))
    failed_calls = ""
    if evaluation.failed_calls:
        failed_calls = f" ({evaluation.failed_calls} failed, not cached: a rerun asks again)"
    click.echo(f"{len(items)} items; {evaluation.new_calls} new model calls{failed_calls}; "
               f"cache: {evaluation.cache_path}", err=True)
    if plot:
        save_plot(scores, plot)
        click.echo(f"Plot saved to {plot}", err=True)


def parse_methods(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHOD_NAMES]
    if unknown:
        raise click.ClickException(
            f"Unknown method {', '.join(unknown)}: choose from {', '.join(METHOD_NAMES)}"
        )
    return list(dict.fromkeys(chosen))


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
                raise click.ClickException(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(data, dict) or not isinstance(data.get("prompt"), str) or data.get("answer") is None:
                raise click.ClickException(f'{path}, line {number}: expected {{"prompt": "...", "answer": "..."}}')
            items.append(Item(data["prompt"], str(data["answer"])))
    if not items:
        raise click.ClickException(f"{path} has no items")
    return items


def resolve(consortium_name, models, arbiter, max_concurrency, with_arbiter: bool):
    """The consortium's configuration (validated) and its models, resolved before any call."""
    from .config import ConsortiumConfig, ConsortiumConfigError
    from .members import resolve_models

    settings = {}
    if consortium_name:
        from .store import load_config

        settings = load_config(consortium_name)
        if settings is None:
            raise click.ClickException(f"No saved consortium named {consortium_name!r} (see 'llm consortium list')")
    if models:
        settings["models"] = list(models)
    if arbiter:
        settings["arbiter"] = arbiter
    if max_concurrency is not None:
        settings["max_concurrency"] = max_concurrency
    if not settings.get("models"):
        raise click.ClickException("Give the members: --consortium NAME, or -m MODEL (repeatable)")
    if not settings.get("arbiter"):
        if with_arbiter:
            raise click.ClickException("The methods need --arbiter MODEL (the vote asks it when there is no clear "
                                       "majority)")
    try:
        config = ConsortiumConfig.from_dict(settings)
        names = config.models + ([config.arbiter] if with_arbiter else [])
        return config, resolve_models(names)
    except ConsortiumConfigError as exc:
        raise click.ClickException(str(exc)) from None


class Progress:
    """'answered 12/40' on stderr: redrawn in place on a terminal, else every ten items."""

    EVERY = 10

    def __init__(self):
        self.stream = sys.stderr
        self.live = self.stream.isatty()

    def update(self, what: str, done: int, total: int) -> None:
        if self.live:
            self.stream.write(f"\r{what} {done}/{total}" + ("\n" if done == total else ""))
        elif done % self.EVERY == 0 or done == total:
            self.stream.write(f"{what} {done}/{total}\n")
        self.stream.flush()


class AnswerCache:
    """Model replies in SQLite, keyed by (model, prompt, sample).

    Only successful replies are stored. The file is a cache: it can be
    deleted at any time, at the cost of asking the models again.
    """

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        with self.conn:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS consortium_eval_cache (model TEXT, prompt TEXT, sample TEXT, "
                "text TEXT, input_tokens INTEGER, output_tokens INTEGER, seconds REAL, "
                "PRIMARY KEY (model, prompt, sample))"
            )

    def get(self, model: str, prompt: str, sample: str):
        """The stored reply as a ``CallOutcome`` (0 attempts: no call made), or None."""
        from .members import CallOutcome
        from .results import Usage

        row = self.conn.execute(
            "SELECT text, input_tokens, output_tokens, seconds FROM consortium_eval_cache "
            "WHERE model = ? AND prompt = ? AND sample = ?",
            (model, prompt, sample),
        ).fetchone()
        if row is None:
            return None
        text, input_tokens, output_tokens, seconds = row
        return CallOutcome(text, None, Usage(input_tokens, output_tokens), seconds, attempts=0)

    def put(self, model: str, prompt: str, sample: str, outcome) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO consortium_eval_cache VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model, prompt, sample, outcome.text, outcome.usage.input, outcome.usage.output,
                 round(outcome.seconds, 3)),
            )

    def close(self) -> None:
        self.conn.close()


class Evaluation:
    """Runs the members once per item (or reads them from the cache), then
    replays each method on those answers and scores everything."""

    def __init__(self, config, handles, progress: Progress | None = None):
        from .engine import ConsortiumOrchestrator, join_system
        from .methods.vote import MEMBER_INSTRUCTIONS
        from .store import user_dir

        self.config = config
        self.handles = handles
        self.progress = progress
        self.orchestrator = ConsortiumOrchestrator(config=config)
        self.system = join_system(config.system_prompt, MEMBER_INSTRUCTIONS)
        self.cache_path = user_dir() / CACHE_FILE
        self.new_calls = 0
        self.failed_calls = 0
        self.member_names: list[str] = []

    async def run(self, items: list[Item], methods: list[str]) -> list[Score]:
        """Score every member, the oracle and ``methods`` on ``items``."""
        # Set up here, on the event loop's thread, where every query and call runs.
        self.cache = AnswerCache(self.cache_path)
        # Every call, members' and judges', takes it: it bounds the calls in
        # flight, and a call's seconds do not include its wait for it.
        self.limiter = asyncio.Semaphore(self.config.max_concurrency)
        try:
            members = self.item_run(items[0]).members  # (model, instance) pairs, the same for every item
            self.member_names = [model if instance == 1 else f"{model}#{instance}" for model, instance in members]
            answers = await self.each("answered", [self.answer_item(item, members) for item in items])
            scores = self.score_members(items, answers)
            for method in methods:
                scores.append(await self.score_method(method, items, answers))
        finally:
            self.cache.close()
        return scores

    def item_run(self, item: Item):
        """A Run for one item; its id is derived from the prompt, so the
        council's shuffles, and so its prompts, are the same on every replay."""
        from .engine import Run

        return Run(
            config=self.config, prompt=item.prompt, system=self.config.system_prompt, conversation="",
            history=[], handles=self.handles, run_id=hashlib.sha256(item.prompt.encode()).hexdigest()[:32],
        )

    async def each(self, what: str, coroutines: list) -> list:
        """Await coroutines concurrently, in order, reporting progress as each finishes."""
        done = 0

        async def counted(coroutine):
            nonlocal done
            result = await coroutine
            done += 1
            if self.progress:
                self.progress.update(what, done, len(coroutines))
            return result

        return await asyncio.gather(*(counted(c) for c in coroutines))

    async def answer_item(self, item: Item, members):
        return await asyncio.gather(*(self.answer(item.prompt, model, instance) for model, instance in members))

    async def answer(self, prompt: str, model: str, instance: int):
        """One member's answer to one item, from the cache or from the model."""
        from .members import call_model
        from .results import MemberResult

        outcome = await self.cached((model, f"{self.system}\n\n{prompt}", str(instance)), lambda: call_model(
            self.handles[model], prompt=prompt, system=self.system, timeout=self.config.timeout,
            attempts=self.config.attempts, backoff=self.config.retry_backoff, limiter=self.limiter,
        ))
        return MemberResult(model, instance, outcome.text, outcome.error, round(outcome.seconds, 3),
                            outcome.usage, outcome.attempts)

    async def cached(self, key: tuple[str, str, str], make_call):
        """The reply stored under ``key``, or ``await make_call()`` (stored when it succeeds)."""
        outcome = self.cache.get(*key)
        if outcome is None:
            outcome = await make_call()
            self.new_calls += 1
            if outcome.error is None:
                self.cache.put(*key, outcome)
            else:
                self.failed_calls += 1
        return outcome

    def score_members(self, items: list[Item], answers) -> list[Score]:
        """A row per member, and the oracle's."""
        from .aggregate import extract_answer, is_correct

        rows = [Score(name, "member") for name in self.member_names]
        oracle = Score("oracle", "oracle")
        for number, (item, item_answers) in enumerate(zip(items, answers), 1):
            right = [m.ok and is_correct(extract_answer(m.text), item.answer) for m in item_answers]
            for row, member, correct in zip(rows, item_answers, right):
                row.count(correct)
                row.spend_members([member])
                if not member.ok:
                    row.note(number, item, "failed", member.error)
            oracle.count(any(right))
            oracle.spend_members(item_answers)
            if not any(m.ok for m in item_answers):
                oracle.note(number, item, "failed", EVERY_MEMBER_FAILED)
        return rows + [oracle]

    async def score_method(self, method: str, items: list[Item], answers) -> Score:
        from .aggregate import is_correct

        row = Score(method, "method")
        results = await self.each(
            f"{method}: judged", [self.judge(method, item, a, row) for item, a in zip(items, answers)]
        )
        for number, (item, item_answers, (predicted, problem)) in enumerate(zip(items, answers, results), 1):
            row.count(is_correct(predicted, item.answer))
            row.spend_members(item_answers)
            if problem:
                row.note(number, item, *problem)
        return row

    async def judge(self, method: str, item: Item, item_answers, row: Score):
        """(the method's extracted answer, None or (kind, reason) when it failed
        or fell back) for one item, its calls counted in ``row``."""
        from .config import ConsortiumError
        from .engine import Round
        from .judging import judge_round

        answered = [m for m in item_answers if m.ok]
        if not answered:
            return None, ("failed", EVERY_MEMBER_FAILED)
        run = self.item_run(item)
        run.rounds.append(Round(1, list(item_answers)))
        try:
            judgement, _ = await judge_round(run, 1, answered, limiter=self.limiter, method=method,
                                             call=self.cached_call(run.fence, row))
        except ConsortiumError as exc:
            return None, ("failed", str(exc))
        problem = ("fallback", judgement.fallback) if judgement.fallback else None
        return method_answer(judgement), problem

    def cached_call(self, fence: str, row: Score):
        """A ``judging.Caller`` whose replies come from the cache when they can, its cost counted in ``row``.

        The key is the prompt as sent with the run's random fence replaced by
        a placeholder, and the call's role and instance as the sample.
        """
        from .judging import real_call

        async def call(handle, *, role, instance, prompt, **kwargs):
            key = (handle.model_id, prompt.replace(fence, FENCE_KEY), f"{role}:{instance}")
            outcome = await self.cached(
                key, lambda: real_call(handle, role=role, instance=instance, prompt=prompt, **kwargs)
            )
            row.spend(1, outcome.usage.input, outcome.usage.output, outcome.seconds)
            return outcome

        return call


def method_answer(judgement) -> str | None:
    """The short answer a judgement gave: the vote's winner when the vote
    decided (its synthesis is the winner's text without the ``<answer>``
    tags), else the answer extracted from the synthesis."""
    from .aggregate import extract_answer

    details = judgement.details or {}
    if details.get("winner") is not None and not details.get("arbiter_called"):
        return details["winner"]
    return extract_answer(judgement.synthesis)


def table(scores: list[Score]) -> str:
    """The scores as a plain text table."""
    width = max(len("method"), *(len(s.method) for s in scores))
    lines = [
        f"{'method':<{width}}  {'accuracy':>8}  {'correct':>9}  {'tokens':>10}  {'seconds':>9}  {'calls':>7}  "
        f"{'failed':>6}  {'fallback':>8}"
    ]
    for s in scores:
        lines.append(
            f"{s.method:<{width}}  {s.accuracy:>8.3f}  {f'{s.correct}/{s.items}':>9}  {s.tokens:>10,}  "
            f"{s.seconds:>9.1f}  {s.calls:>7,}  {s.failed:>6,}  {s.fallback:>8,}"
        )
    return "\n".join(lines)


def problem_list(scores: list[Score]) -> str:
    """Which items each row failed or fell back on, and why: a line per row and reason."""
    lines = ["Failed (scored as wrong) or fell back to the members' majority (scored as its answer), "
             "items numbered from 1:"]
    for s in scores:
        by_reason: dict[tuple[str, str], list[int]] = {}
        for p in s.problems:
            by_reason.setdefault((p.kind, p.reason), []).append(p.item)
        for (kind, reason), numbers in by_reason.items():
            verb = "failed" if kind == "failed" else "fell back"
            lines.append(f"  {s.method} {verb} on {item_numbers(numbers)}: {reason}")
    return "\n".join(lines)


def item_numbers(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "items 1-3, 7"; [4] -> "item 4"."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"item {text}" if len(numbers) == 1 else f"items {text}"


def save_plot(scores: list[Score], path: Path) -> None:
    """Accuracy against tokens, one labelled point per member and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for s in scores:
        marker = {"member": "o", "oracle": "*", "method": "s"}[s.kind]
        axes.scatter(s.tokens, s.accuracy, marker=marker, s=60)
        axes.annotate(s.method, (s.tokens, s.accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set_xlabel("tokens (whole dataset)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.05)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
