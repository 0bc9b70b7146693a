"""A consortium as an llm model: ``llm -m NAME``, ``llm chat``, ``llm -c``,
``llm.get_model(NAME)`` and ``llm.get_async_model(NAME)``.

The model runs the engine and yields the final synthesis once, when the
arbiter's reply that holds it is complete and parsed: a reply cut short and
retried, a round that a later one replaces, or a synthesis a member tried
to forge never reaches llm's output or logs, so what is printed, what
``llm logs`` stores and the recorded answer are always the same text.
Progress while the run goes on is shown on stderr, not in the answer.
llm imports this module on every command when a consortium is saved, so
the engine is imported only when a prompt runs.

Member and arbiter calls are not logged as llm responses (``llm -c`` would
then continue a member's conversation): they go to the plugin's own tables
through ``RunRecorder``; llm logs the consortium's own response.
"""

from __future__ import annotations

from typing import Optional

import llm
from pydantic import Field

from .config import ConsortiumConfig, ConsortiumError


class ConsortiumOptions(llm.Options):
    confidence_threshold: Optional[float] = Field(
        None, description="Stop once the arbiter's confidence reaches this (0-1, or a percentage)"
    )
    max_iterations: Optional[int] = Field(None, description="Most rounds to run")
    min_iterations: Optional[int] = Field(None, description="Fewest rounds to run")
    timeout: Optional[float] = Field(None, description="Seconds each model call may take")
    quorum: Optional[int] = Field(None, description="Judge a round once this many members answered")
    max_concurrency: Optional[int] = Field(None, description="Most model calls in flight at once")
    attempts: Optional[int] = Field(None, description="Attempts per call on transient errors")
    method: Optional[str] = Field(None, description="How a round is judged: arbiter, council or vote")


def configured(config: ConsortiumConfig, options: llm.Options) -> ConsortiumConfig:
    """The saved configuration with this call's ``-o`` overrides applied."""
    overrides = {k: v for k, v in options.model_dump().items() if v is not None}
    return ConsortiumConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config


def split_history(prompt) -> tuple[list, str | None]:
    """Earlier turns and the system prompt, from ``prompt.messages``.

    On ``llm -c`` and in ``llm chat`` the history arrives only there, and
    ``prompt.system`` is empty on continued turns although the system
    message is in the list.
    """
    messages = list(getattr(prompt, "messages", None) or [])
    if messages and messages[-1].role == "user":
        messages = messages[:-1]
    system = prompt.system or next(
        ("".join(getattr(p, "text", "") or "" for p in m.parts) for m in messages if m.role == "system"),
        None,
    )
    history = [m for m in messages if m.role != "system"]
    return history, system or None


class _Consortium:
    """What the sync and async models share."""

    can_stream = True
    needs_key = None
    Options = ConsortiumOptions

    def __init__(self, model_id: str, config: ConsortiumConfig, *, saved: bool = True, observers=()):
        self.model_id = model_id
        self.config = config
        self.saved = saved
        self.observers = list(observers)

    def __str__(self):
        return f"Consortium: {self.model_id}"

    def _start(self, prompt):
        """Validate and resolve everything (raising before any model call)."""
        from .engine import ConsortiumOrchestrator
        from .recorder import RunRecorder

        config = configured(self.config, prompt.options)
        history, system = split_history(prompt)
        recorder = RunRecorder(self.model_id if self.saved else None) if not no_log() else None
        observers = [recorder, *self.observers] if recorder else self.observers
        orchestrator = ConsortiumOrchestrator(config=config, observers=observers)
        run = orchestrator.prepare(prompt.prompt, history=history, system=system)
        return orchestrator, run, recorder

    @staticmethod
    def _finish(response, result: dict) -> str:
        usage = result["metadata"]["usage"]
        if usage["total"] or not usage["unreported"]:  # unknown is not 0: left unset
            response.set_usage(input=usage["input"], output=usage["output"])
        response.response_json = result
        return result["synthesis"]["synthesis"]


def mark_recorded(result: dict, recorder, run) -> dict:
    """``result`` with ``metadata.recorded``: whether logs.db holds the run's
    whole record, final status included. Nothing may point at the record
    (``llm consortium inspect``) unless it is True."""
    result["metadata"]["recorded"] = recorder is not None and recorder.recorded(run.run_id)
    return result


def no_log() -> bool:
    """Whether the command running this model was given ``--no-log``.

    llm does not tell models; but on the command line a model runs inside
    a click command, llm's ``prompt`` (``llm -m NAME --no-log``) or
    ``llm consortium run --no-log``, and both name the flag ``no_log``.
    (``llm logs off`` is checked by the recorder itself.)
    """
    import click

    context = click.get_current_context(silent=True)
    return bool(context and context.params.get("no_log"))


class ConsortiumModel(_Consortium, llm.Model):
    def execute(self, prompt, stream, response, conversation):
        from .runner import run_coroutine

        orchestrator, run, recorder = self._start(prompt)
        try:
            # Ctrl-C, SIGTERM and SIGHUP cancel the run and record it as cancelled
            result = run_coroutine(orchestrator.execute(run))
        except (ConsortiumError, KeyboardInterrupt) as exc:
            exc.result = mark_recorded(getattr(exc, "result", None) or run.to_dict(), recorder, run)
            raise
        yield self._finish(response, mark_recorded(result, recorder, run))


class AsyncConsortiumModel(_Consortium, llm.AsyncModel):
    async def execute(self, prompt, stream, response, conversation):
        orchestrator, run, recorder = self._start(prompt)
        try:
            result = await orchestrator.execute(run)
        except ConsortiumError as exc:
            exc.result = mark_recorded(exc.result, recorder, run)
            raise
        yield self._finish(response, mark_recorded(result, recorder, run))
