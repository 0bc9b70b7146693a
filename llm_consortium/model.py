"""A consortium as an llm model: ``llm -m NAME``, ``llm chat``, ``llm -c``,
``llm.get_model(NAME)`` and ``llm.get_async_model(NAME)``.

The model runs the engine and streams only the final round's synthesis
(see relay.py). llm imports this module on every command when a consortium
is saved, so the engine is imported only when a prompt runs.

Member and arbiter calls are not logged as llm responses (``llm -c`` would
then continue a member's conversation): they go to the plugin's own tables
through ``RunRecorder``; llm logs the consortium's own response.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Optional

import llm
from pydantic import Field

from .config import ConsortiumConfig


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

    def _start(self, prompt, send):
        """Validate and resolve everything (raising before any model call)."""
        from .engine import ConsortiumOrchestrator
        from .recorder import RunRecorder
        from .relay import SynthesisRelay

        config = configured(self.config, prompt.options)
        history, system = split_history(prompt)
        relay = SynthesisRelay(config, send)
        recorder = RunRecorder(self.model_id if self.saved else None)
        orchestrator = ConsortiumOrchestrator(config=config, observers=[recorder, relay, *self.observers])
        run = orchestrator.prepare(prompt.prompt, history=history, system=system)
        return orchestrator, run, relay

    @staticmethod
    def _finish(response, relay, result: dict) -> str:
        usage = result["metadata"]["usage"]
        response.set_usage(input=usage["input"], output=usage["output"])
        response.response_json = result
        return relay.rest(result["synthesis"]["synthesis"])


class ConsortiumModel(_Consortium, llm.Model):
    def execute(self, prompt, stream, response, conversation):
        from .runner import Submitted

        chunks: queue.Queue = queue.Queue()
        orchestrator, run, relay = self._start(prompt, chunks.put)
        done = object()
        submitted = Submitted(orchestrator.execute(run))
        submitted.future.add_done_callback(lambda _: chunks.put(done))
        try:
            while (item := chunks.get()) is not done:
                yield item
        except BaseException:  # Ctrl-C or an abandoned generator: cancel the run
            submitted.cancel()
            raise
        yield self._finish(response, relay, submitted.future.result())


class AsyncConsortiumModel(_Consortium, llm.AsyncModel):
    async def execute(self, prompt, stream, response, conversation):
        chunks: asyncio.Queue = asyncio.Queue()
        orchestrator, run, relay = self._start(prompt, chunks.put_nowait)
        done = object()
        task = asyncio.create_task(orchestrator.execute(run))
        task.add_done_callback(lambda _: chunks.put_nowait(done))
        try:
            while (item := await chunks.get()) is not done:
                yield item
        finally:
            task.cancel()
        yield self._finish(response, relay, task.result())
