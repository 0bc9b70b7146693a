"""``llm consortium eval``: the command, its options and what it prints
(``evaluation.evaluate`` says what an eval measures and how).

llm imports this module on every command, so it imports only click and the
standard library at the top.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from ..core.methods import names as method_names
from ..evaluation.evaluate import CACHE_FILE, DatasetError, needs_arbiter, read_dataset, sample_path


@click.command(name="eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--sample", is_flag=True, help="Use the 40-item sample dataset that ships with the plugin")
@click.option("--consortium", "consortium_name", help="A saved consortium to evaluate")
@click.option("-m", "--model", "models", multiple=True, help="Member model (repeatable; model:3 for three samples)")
@click.option("--arbiter", help="Arbiter model (the council's chairman too)")
@click.option("--methods", default=lambda: ",".join(every_method()),
              show_default="every method, the least judging first",
              help="Comma-separated methods to score besides the members and the baselines")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items")
@click.option("--samples", type=click.IntRange(min=1), metavar="N",
              help="Answers of the best member in the Self-MoA baseline (default: the number of members)")
@click.option("--max-concurrency", metavar="N",
              help="Most model calls in flight at once, across all items and methods (default: the "
                   "consortium's max_concurrency, 32 unless saved otherwise); a sync-only model "
                   "still answers one call at a time")
@click.option("json_", "--json", is_flag=True, help="Print the results as JSON")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Save a chart of accuracy (95% intervals) against dollars per item (needs matplotlib: "
                   "llm install matplotlib)")
@click.option("--calibrate", is_flag=True,
              help="Fit each method's p(right) on these items (needs --consortium NAME, as saved) and store it "
                   "with the consortium: its runs then show p(right), and --min-p can act on it")
def eval_command(dataset, sample, consortium_name, models, arbiter, methods, limit, samples, max_concurrency,
                 json_, plot, calibrate):
    """Is the consortium worth it on DATASET? Score each member, the best
    member sampled N times with a majority vote (Self-MoA), the oracle and
    whole runs of each judging method.

    DATASET is JSON Lines: {"prompt": ..., "answer": ...} per line, with
    short answers (numbers, letters) compared by exact match. Every reply is
    cached, so a second run costs no model call.

    The table gives each row's accuracy, its difference from the best
    member with a paired bootstrap 95% interval, dollars and wall-clock
    seconds per item. Below it: how well the arbiter's confidence and the
    measured agreement are calibrated, how alike the members' errors are,
    and a one-line recommendation. The failed column counts the items a
    row has no answer for (scored as wrong); fallback, those no judge could
    decide, so the members' majority answered. Both are listed, with why.

    \b
    llm consortium eval data.jsonl -m model-a -m model-b -m model-c --arbiter model-d
    llm consortium eval data.jsonl --consortium NAME --methods vote,council --json
    llm consortium eval --sample --consortium NAME --limit 10 --plot eval.png
    llm consortium eval data.jsonl --consortium NAME --calibrate

    With --calibrate, each method's calibrated probability of being right
    is fitted and stored with the saved consortium, and its ECE is reported
    before and after, on held-out folds.
    """
    if bool(dataset) == sample:
        raise click.UsageError("Give a DATASET file or --sample (the dataset that ships with the plugin), not both")
    if calibrate and not consortium_name:
        raise click.UsageError("--calibrate needs --consortium NAME: the map is stored with a saved consortium")
    if calibrate and (models or arbiter):
        raise click.UsageError("--calibrate fits the saved consortium as saved: leave out -m and --arbiter")
    if sample:
        dataset = sample_path()
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from ..extras import install_command

            raise click.ClickException(f"--plot needs matplotlib: {install_command('plot')}") from None
    chosen = parse_methods(methods)
    try:
        items = read_dataset(dataset)[:limit]
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    config, handles = resolve(consortium_name, models, arbiter, max_concurrency, with_arbiter=needs_arbiter(chosen))

    from ..evaluation import evalreport
    from ..evaluation.evalrun import Evaluation
    from ..core.runner import run_coroutine
    from ..storage.store import user_dir

    evaluation = Evaluation(config, handles, user_dir() / CACHE_FILE, progress=EvalProgress(), samples=samples)
    rows = run_coroutine(evaluation.run(items, chosen))
    text, best = evalreport.report(rows)
    fits = calibrated(rows, consortium_name, config) if calibrate else None
    if json_:
        click.echo(json.dumps({
            "dataset": str(dataset),
            "items": len(items),
            "members": evaluation.member_names,
            "arbiter": config.arbiter if needs_arbiter(chosen) else None,
            "self_moa_samples": evaluation.samples,
            "new_calls": evaluation.new_calls,
            "failed_calls": evaluation.failed_calls,
            "max_concurrency": config.max_concurrency,
            "results": [r.to_dict() for r in rows],
            **evalreport.summary_dict(rows, best),
            **({"calibrated": [fit.to_dict() for fit in fits]} if calibrate else {}),
        }, indent=2))
    else:
        click.echo(text)
        if fits:
            from ..evaluation.calibration import report_lines

            click.echo("\n" + "\n".join(report_lines(fits)))
        if any(r.problems for r in rows):
            click.echo("\n" + evalreport.problem_list(rows))
    failed_calls = ""
    if evaluation.failed_calls:
        failed_calls = f" ({evaluation.failed_calls} failed, not cached: a rerun asks again)"
    click.echo(f"{len(items)} items; {evaluation.new_calls} new model calls{failed_calls}; "
               f"cache: {evaluation.cache_path}", err=True)
    if plot:
        evalreport.save_plot(rows, plot)
        click.echo(f"Plot saved to {plot}", err=True)
    if calibrate:
        stored_as(fits, consortium_name, config)


def calibrated(rows, name: str, config) -> list:
    """Each method's calibration (``evaluation.calibration``), stored with the
    saved consortium ``name`` for the methods that had enough items."""
    from ..evaluation.calibration import fit_rows, stored
    from ..storage.store import save_calibration

    fits = fit_rows(rows)
    data = stored(fits, config.models, config.arbiter)
    if data:
        save_calibration(name, data)
    return fits


def stored_as(fits: list, name: str, config) -> None:
    """Say on stderr what was stored; no method calibrated is an error (exit 1)."""
    done = [fit for fit in fits if fit.map]
    if not done:
        raise click.ClickException(f"No method could be calibrated, so nothing was stored with {name}: "
                                   + "; ".join(f"{fit.method}: {fit.skipped}" for fit in fits))
    maps = ", ".join(f"{fit.method} on {fit.items} items" for fit in done)
    note = "" if config.method in {fit.method for fit in done} else f"; none for {config.method}, its method"
    click.echo(f"Calibration stored with {name}: {maps}{note}", err=True)


def parse_methods(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in method_names()]
    if unknown:
        raise click.ClickException(
            f"Unknown method {', '.join(unknown)}: choose from {', '.join(method_names())}"
        )
    return list(dict.fromkeys(chosen))


def every_method() -> list[str]:
    """The registry's methods in the order each declares (``EVAL_ORDER``: the
    least judging first), those that declare none last."""
    from ..core.methods import method

    return sorted(method_names(), key=lambda name: (getattr(method(name), "EVAL_ORDER", math.inf), name))


def resolve(consortium_name, models, arbiter, max_concurrency, with_arbiter: bool):
    """The consortium's configuration (validated) and its models, resolved before any call."""
    from ..core.config import ConsortiumConfig, ConsortiumConfigError
    from ..core.handles import resolve_models

    settings = {}
    if consortium_name:
        from ..storage.store import load_config

        settings = load_config(consortium_name)
        if settings is None:
            raise click.ClickException(f"No saved consortium named {consortium_name!r} (see 'llm consortium list')")
    if models:
        settings["models"] = list(models)
    if arbiter:
        settings["arbiter"] = arbiter
    if max_concurrency is not None:
        settings["max_concurrency"] = max_concurrency
    settings.pop("min_p", None)  # the eval scores every answer; it refuses none
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


class EvalProgress:
    """'answered 12/40' on stderr: redrawn in place on a terminal, else every ten items."""

    EVERY = 10

    def __init__(self):
        from .terminal import is_terminal

        self.stream = sys.stderr
        self.live = is_terminal(self.stream, "stderr")

    def update(self, what: str, done: int, total: int) -> None:
        if self.live:
            self.stream.write(f"\r{what} {done}/{total}" + ("\n" if done == total else ""))
        elif done % self.EVERY == 0 or done == total:
            self.stream.write(f"{what} {done}/{total}\n")
        self.stream.flush()
