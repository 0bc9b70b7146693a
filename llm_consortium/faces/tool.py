"""A saved consortium as an llm tool: ``llm -m MODEL -T 'Consortium("NAME")'``.

Any model that can call tools may then ask the consortium a question. The
toolbox gives it one tool, named after the consortium, whose description
names the members, the arbiter and the method, and the recent average cost
of a run where the store knows it. The run is recorded (``RunRecorder``, as
``llm -m NAME`` records one) and the tool's result is the answer with its
status, confidence, how many members agree, its cost and the run's id
(``llm consortium inspect ID``).

Recursion: a member of the consulted consortium may itself be an agent
that holds this tool (or a consortium that passes it to its members).
``_CONSULTING`` is a context variable holding the consortium being
consulted; the engine's tasks and threads inherit it, so a call made
anywhere inside that run finds it set and is refused with a tool error
saying why, rather than consulting again without end.

``llm`` calls every plugin's ``register_tools`` on each prompt: importing
this module costs nothing but the class; the engine and the store are
imported when the toolbox is used.
"""

from __future__ import annotations

import asyncio
import re
from contextvars import ContextVar

import click
import llm

#: The consortium whose run the current code is part of, when that run was
#: started by this tool (None elsewhere).
_CONSULTING: ContextVar[str | None] = ContextVar("llm_consortium_consulting", default=None)

#: How many of a consortium's latest recorded runs its average cost is taken over.
RECENT_RUNS = 10


class Consortium(llm.Toolbox):
    """Ask a saved consortium (llm consortium save NAME ...) a question: its members answer at once and its
    arbiter combines their answers. -T 'Consortium("NAME")'."""

    def __init__(self, name: str):
        from ..core.config import ConsortiumConfig, ConsortiumConfigError
        from ..storage.store import load_config

        saved = load_config(name) if isinstance(name, str) else None
        if saved is None:
            raise click.ClickException(f"Consortium({name!r}): no consortium is saved by that name "
                                       "(see 'llm consortium list')")
        try:
            # Not ``_config``: llm's Toolbox keeps its constructor's arguments there.
            self._settings = ConsortiumConfig.from_dict(saved)
        except ConsortiumConfigError as exc:
            raise click.ClickException(f"Consortium({name!r}): its saved settings are not valid: {exc}") from None
        self._name = name

    def tools(self):
        # One tool per consortium, named after it, so that a model may be
        # given several (-T 'Consortium("a")' -T 'Consortium("b")').
        tool = llm.Tool.function(self.ask, name=tool_name(self._name), description=self._description())
        tool.plugin = getattr(self, "plugin", None)
        yield tool

    def _description(self) -> str:
        config = self._settings
        text = (f"Ask the consortium {self._name!r}, a panel of models, one question: its members "
                f"({', '.join(config.models)}) answer it at once and their answers are judged ({config.method}; "
                f"judge: {config.arbiter}). Returns the answer with its status, confidence, how many members "
                "agree, its cost and the run's id.")
        average = recent_cost(self._name)
        if average is not None:
            text += f" Its recent runs cost {average} each on average."
        return text

    async def ask(self, prompt: str) -> dict:
        "Ask the consortium one question (an instance's tool is named Consortium_NAME after it)."
        # The result is data for the model that asked, a failed run's too (its error, and what had arrived).
        outer = _CONSULTING.get()
        if outer is not None:
            raise RuntimeError(
                f"Consortium {self._name!r} was not asked: this call comes from inside a run of consortium "
                f"{outer!r}, which was itself asked as a tool, and a consortium asked as a tool may not ask one "
                "again (that could go on without end)"
            )
        from ..core.config import ConsortiumError
        from ..core.engine import ConsortiumOrchestrator
        from ..core.runner import background_loop
        from ..storage.recorder import RunRecorder
        from ..storage.store import load_calibration
        from .model import no_log, recorded_record

        recorder = None if no_log() else RunRecorder(self._name)
        orchestrator = ConsortiumOrchestrator(config=self._settings, observers=[recorder] if recorder else [])
        # A ConsortiumConfigError is the tool's error, before any call; the
        # saved consortium's calibration gives p(right) (and --min-p its map).
        run = orchestrator.prepare(prompt, calibration=load_calibration(self._name))
        token = _CONSULTING.set(self._name)
        try:
            # On the loop every sync caller of the engine shares (the HTTP
            # clients of llm's providers are bound to the loop that made
            # them), whichever loop llm runs this tool on; the run's tasks
            # inherit this context, so _CONSULTING is set inside the run.
            future = asyncio.run_coroutine_threadsafe(orchestrator.execute(run), background_loop())
        finally:
            _CONSULTING.reset(token)
        try:
            await asyncio.wrap_future(future)
        except ConsortiumError as exc:
            return tool_result(self._name, recorded_record(run, recorder), str(exc))
        return tool_result(self._name, recorded_record(run, recorder))


def tool_name(name: str) -> str:
    """The tool's name for consortium ``name``: ``Consortium_`` and the name
    in the letters providers accept in a function's name (at most 64)."""
    return "Consortium_" + re.sub(r"[^A-Za-z0-9_-]", "_", name)[:53]


def recent_cost(name: str) -> str | None:
    """The average cost of the latest runs of ``name`` whose cost is known,
    in dollars for reading; None when none is known."""
    from ..core.pricing import dollars
    from ..storage.store import list_runs

    costs = [run.cost_usd for run in list_runs(RECENT_RUNS, name=name) if run.cost_usd is not None]
    return dollars(sum(costs) / len(costs)) if costs else None


def tool_result(name: str, record, error: str | None = None) -> dict:
    """What the asking model gets back from the run's ``RunRecord``: the answer (None when the run has
    none, with the reason as ``error``), status, confidence, agreement,
    cost and the run's id (None when the run was not recorded: ``--no-log``
    or ``llm logs off``)."""
    from .model import no_answer_message

    outcome = record.outcome
    if error is None and not outcome.has_answer:
        error = no_answer_message(record)
    return {
        "consortium": name,
        "answer": record.synthesis.synthesis if outcome.has_answer else None,
        "status": outcome.status,
        "confidence": record.verdict.confidence if record.verdict else None,
        **({"p_right": outcome.p_right} if outcome.calibrated_items is not None else {}),
        "agreement": outcome.counts or None,
        "cost_usd": record.usage.cost_usd,
        "run_id": record.run_id if record.recorded else None,
        **({"error": error} if error else {}),
    }
