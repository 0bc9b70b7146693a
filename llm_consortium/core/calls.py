"""One call of one model, with a timeout, retries for transient errors,
usage and latency. Whatever goes wrong is returned as data (``CallOutcome``),
never raised."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import (
    EMPTY, EmptyReply, PluginAborted, PluginInterrupted, describe, http_status, is_transient, request_of,
)
from .handles import ModelHandle
from .responses import CHAIN_LIMIT, Ask, consume
from .results import Usage
from .turns import take_turn

# No single wait between attempts is longer than this, however many attempts.
MAX_BACKOFF_SECONDS = 10.0


@dataclass
class CallOutcome:
    text: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0  # in calls, from the first attempt's start to the end
    queued: float = 0.0  # waiting for a turn (--max-concurrency, a busy sync model)
    attempts: int = 0
    cancelled: bool = False
    # A streamed reply came back empty or cut short (and was asked for again
    # without streaming): a failure inside a 200 stream, or a server that
    # ended it for another request (llama.cpp's interrupt_requests).
    broken_stream: bool = False


def backoff_delay(backoff: float, attempt: int) -> float:
    """Full jitter over an exponentially growing, capped window."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, backoff * 2 ** (attempt - 1)))


async def call_model(
    handle: ModelHandle,
    *,
    prompt: str,
    system: str | None = None,
    messages: list | None = None,
    options: dict | None = None,
    schema: dict | None = None,
    attachments: list | None = None,
    tools: list | None = None,
    chain_limit: int = CHAIN_LIMIT,
    timeout: float | None,
    attempts: int,
    backoff: float,
    limiter: asyncio.Semaphore,
    on_attempt: Callable[[int], None] | None = None,
    on_chunk: Callable[[str], None] | None = None,
    on_retry: Callable[[int, str, float], None] | None = None,
    on_tool_call: Callable[[dict], None] | None = None,
    outcome: CallOutcome | None = None,
) -> CallOutcome:
    """Call one model, retrying transient errors with exponential backoff.

    ``options`` are the model's own (``-o``); ``schema``, ``attachments``
    and ``tools`` are passed as they are (see ``responses.fit`` for a
    model that lacks support for them). With tools the call is llm's tool chain: the
    model calls them, llm runs them, and the text is the model's answer
    after the last call; ``on_tool_call({name, arguments, output, error})``
    is told of each tool call once it has run (in every attempt: a tool's
    effects are not undone by a retry); ``chain_limit`` caps the chain's
    responses, as llm's ``--cl`` does. ``timeout`` bounds each
    attempt. A call that runs out of our time is not retried: a model that
    hung once has already cost the whole budget.
    ``on_attempt(n)`` is told as each attempt starts (a listener that was
    streaming the previous attempt must start over); ``on_retry(attempt,
    error, delay)`` before each wait. Chunks of an attempt that has ended
    (a sync model's thread cannot be stopped) are not passed on.

    The result is filled into ``outcome`` when one is given, so a caller
    that is cancelled still has the call's time and state to record.
    """
    started = time.perf_counter()
    outcome = outcome if outcome is not None else CallOutcome()
    ask = Ask(prompt, system, messages, options, schema, list(attachments or []), list(tools or []), chain_limit)
    try:
        await _attempts(handle, ask, timeout, attempts, backoff, limiter, on_attempt, on_chunk, on_retry,
                        on_tool_call or (lambda call: None), outcome)
    except asyncio.CancelledError:
        outcome.text, outcome.error, outcome.cancelled = None, "Cancelled: the run was cancelled", True
        raise
    finally:
        outcome.seconds = time.perf_counter() - started - outcome.queued
    return outcome


async def _attempts(handle, ask, timeout, attempts, backoff, limiter, on_attempt, on_chunk, on_retry,
                    on_tool_call, outcome: CallOutcome) -> None:
    for attempt in range(1, attempts + 1):
        outcome.attempts = attempt
        if on_attempt:
            on_attempt(attempt)
        live = [True]  # this attempt's own flag: a late thread of an earlier one stays muted

        def deliver(chunk: str, live=live) -> None:
            if live[0] and on_chunk:
                on_chunk(chunk)

        deadline = None
        try:
            waited = time.perf_counter()
            # A busy sync model is waited for before a --max-concurrency slot
            # is taken, so calls queued on one local model hold no slots.
            turn = await take_turn(handle)
            try:
                async with limiter:
                    outcome.queued += time.perf_counter() - waited
                    deadline = None if timeout is None else time.perf_counter() + timeout
                    text, usage = await asyncio.wait_for(
                        _answer(handle, ask, deliver, on_tool_call, turn, outcome), timeout
                    )
            finally:
                if turn is not None and not turn.handed:
                    turn.turns.give_back()
        except Exception as exc:  # a model's failure is data, whatever its type
            if isinstance(exc, PluginAborted) and isinstance(exc.raised, KeyboardInterrupt):
                raise PluginInterrupted(f"Interrupted: the plugin of model {handle.model_id} raised "
                                        "KeyboardInterrupt") from exc
            if isinstance(exc, TimeoutError) and deadline is not None and time.perf_counter() >= deadline:
                outcome.error = f"Timeout: no complete answer within {timeout:g} s"
                break
            outcome.error = describe(exc)
            if attempt == attempts or not is_transient(exc):
                break
            delay = backoff_delay(backoff, attempt)
            if on_retry:
                on_retry(attempt, outcome.error, delay)
            await asyncio.sleep(delay)
        else:
            outcome.text, outcome.usage, outcome.error = text, usage, None
            break
        finally:
            live[0] = False


async def _answer(handle, ask: Ask, on_chunk, on_tool_call, turn, outcome: CallOutcome) -> tuple[str, Usage]:
    """One attempt: the reply's text and usage; a reply with no text is an
    ``EmptyReply``.

    A streamed reply that comes back empty, or cut short, is asked for once
    more without streaming, to learn why: servers report some failures
    only inside a 200 stream, where the client cannot see them.
    llama-cpp-python's server answers a prompt over its context with an
    empty stream but, unstreamed, with HTTP 400 ``context_length_exceeded``;
    older llama.cpp builds send an ``error:`` line that the OpenAI client
    skips; and llama.cpp's ``interrupt_requests`` ends a stream, empty or
    mid-reply, when another request arrives. The second reply is the
    answer, or its error the cause. Not for a sync model (local ones raise
    their errors) nor a tool chain (its tools would run again)."""
    ask_again = handle.is_async and not ask.tools and getattr(handle.model, "can_stream", False)
    text, usage, finished = await consume(handle, ask, on_chunk, on_tool_call, turn, stream=True)
    if ask_again and not (text.strip() and finished):
        outcome.broken_stream = True
        try:
            text, more, _ = await consume(handle, ask, on_chunk, on_tool_call, turn, stream=False)
        except Exception as exc:
            if http_status(exc) is None and request_of(exc) is None:
                # Not the server's word (a body not in the API's format breaks the client): no cause learnt.
                raise EmptyReply(EMPTY) from exc
            raise
        usage.add(more)
    if not text.strip():
        raise EmptyReply(EMPTY)
    return text, usage
