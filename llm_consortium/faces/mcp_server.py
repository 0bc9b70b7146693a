"""``llm consortium mcp``: a Model Context Protocol server on stdin and
stdout, through which an agent (an editor's assistant, a desktop chat
client, a coding agent) asks a saved consortium.

Tools: ``ask`` (a prompt to a saved consortium: the answer as text, and
status, confidence, "k of n agree", cost and run id as structured content),
``list_consortiums`` and ``get_run`` (a run's record as ``llm consortium
inspect RUN --json`` prints it). Each ``ask`` runs in a thread of this
process through the consortium's llm model, as ``llm consortium run`` runs
one: recorded as it goes, its answer logged in llm's logs. While it runs,
a progress notification goes out as each member finishes and as each
judging call starts, so a client whose timeout resets on progress keeps
waiting; past ``--max-wait`` seconds, ``ask`` returns the run's id with
status ``running``, the run goes on here, and ``get_run`` has it later.

A mistake or a failed run is a tool error holding the line the CLI prints
for it; model text is only ever a string inside a JSON message. The SDK's
stdio transport (2.3) serves the protocol from a duplicate of descriptor 1
and points descriptor 1 at stderr (and 0 at the null device) while it
serves: what a plugin or a native library writes to stdout goes to stderr
(Python's own buffer for stdout is flushed there as each run ends).

The SDK (the ``mcp`` extra) is imported by ``serve`` only; this module is
imported by the ``mcp`` command only. Its annotations are evaluated where
the tools are defined (no ``from __future__ import annotations``): the SDK
reads them to build each tool's schema.
"""

import asyncio
import json
import sys
import threading
from typing import Annotated, Optional

import click
from pydantic import BaseModel, Field

from ..core.config import ConsortiumConfig, ConsortiumConfigError, ConsortiumError
from ..core.observer import Observer
from ..core.safetext import clean, printable, single_line

# Seconds to wait for a run's row to be written before its id is handed
# out (the recorder writes in a thread of its own).
RECORDED_SECONDS = 5.0


class AskResult(BaseModel):
    """``ask``'s structured content."""

    status: str = Field(description="running (the answer comes later, from get_run), or how the run ended: "
                                    "success, partial, below_threshold, degraded, budget (with an answer); "
                                    "failed, no_verdict (without one: a tool error)")
    run_id: str = Field(description="The run's id, for get_run")
    confidence: Optional[float] = Field(None, description="The judge's confidence in the answer (0-1)")
    agreement: Optional[str] = Field(None, description='"k of n agree, m of n answered"')
    cost_usd: Optional[float] = Field(None, description="Dollars spent; null when a price is unknown")
    cost: Optional[str] = Field(None, description="The cost in words (what is unknown, said so)")


class Panels:
    """Which saved consortiums this server asks, and which by default."""

    def __init__(self, default: Optional[str], allowed: tuple):
        self.default = default
        self.allowed = tuple(allowed)

    def saved(self) -> list:
        """``llm consortium list --json``'s entries, for the consortiums this server may ask."""
        from ..storage.store import list_configs

        return [{"name": name, **config, "created_at": created} for name, config, created in list_configs()
                if not config.get("ad_hoc") and (not self.allowed or name in self.allowed)]

    def config(self, name: Optional[str], method: Optional[str], max_cost: Optional[float]) -> tuple:
        """The consortium ``name`` (or the default) with this ask's settings,
        as (name, ConsortiumConfig); ``ConsortiumConfigError`` says why not."""
        from ..storage import store

        name = name or self.default
        if not name:
            raise ConsortiumConfigError("No consortium named and no default one: pass consortium (see "
                                        "list_consortiums), or start the server with --consortium NAME")
        if self.allowed and name not in self.allowed:
            raise ConsortiumConfigError(f"This server may not ask {name!r}: it asks only "
                                        f"{', '.join(self.allowed)} (llm consortium mcp --allow)")
        data = store.load_config(name)
        if data is None or data.get("ad_hoc"):
            raise ConsortiumConfigError(f"No saved consortium named {name!r} (see list_consortiums)")
        if not store.logging_enabled():
            raise ConsortiumConfigError("Logging is off (llm logs off), so a run would not be recorded for "
                                        "get_run: turn it on with llm logs on")
        overrides = {key: value for key, value in (("method", method), ("max_cost", max_cost)) if value is not None}
        return name, ConsortiumConfig.from_dict({**data, **overrides})


class Ask(Observer):
    """One ``ask``: its run in a thread of its own, its events handed to the
    server's event loop (``events``; None once the run is over)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.run_id: Optional[str] = None
        self.answer: Optional[str] = None
        self.record = None  # the run's RunRecord, once it has one
        self.error: Optional[str] = None  # the CLI's line for a run that ended without an answer

    def _tell(self, message: Optional[str]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, message)
        except RuntimeError:  # the server has stopped (its loop is closed): no one is listening
            pass

    def run_started(self, run) -> None:
        self.run_id = run.run_id
        self._tell(f"Run {run.run_id[:8]} started")

    def member_finished(self, run, round_number, member, prompt) -> None:
        state = "answered" if member.ok else f"failed: {member.error}"
        self._tell(single_line(f"Round {round_number}: {member.model}#{member.instance} {state}")[:200])

    def call_started(self, run, round_number, role, model, instance) -> None:
        self._tell(single_line(f"Round {round_number}: judging ({role} {model})"))

    def start(self, name: str, config: ConsortiumConfig, prompt: str) -> None:
        from .model import ConsortiumModel

        model = ConsortiumModel(name, config, observers=[self])
        threading.Thread(target=self._work, args=(model, prompt, config.system_prompt),
                         name="consortium-mcp-ask", daemon=True).start()

    def _work(self, model, prompt: str, system: Optional[str]) -> None:
        from ..core.record import record_from_result
        from .model import ask_and_log

        try:
            self.answer, response = ask_and_log(model, prompt, system, "llm consortium mcp")
            self.record = record_from_result(response.response_json)
        except (ConsortiumConfigError, ConsortiumError) as exc:  # a mistake, or a run with no answer
            self.record, self.error = getattr(exc, "record", None), str(exc)
        except Exception as exc:  # noqa: BLE001 - a model's or plugin's failure: said as the CLI says it
            self.record, self.error = getattr(exc, "record", None), f"{type(exc).__name__}: {exc}"
        finally:
            # What the run's plugins printed and Python holds in stdout's buffer goes to descriptor 1
            # now, while it points at stderr; at exit the SDK has handed it back to the protocol.
            sys.stdout.flush()
            self._tell(None)


def texts(*lines: str):
    from mcp.types import TextContent

    return [TextContent(type="text", text=line) for line in lines]


def tool_error(message: str, *more: str):
    """A tool error holding ``message`` as the CLI prints it."""
    from mcp.types import CallToolResult

    return CallToolResult(content=texts(f"Error: {single_line(message)}", *more), is_error=True)


def ask_result(ask: Ask):
    """What ``ask`` returns for a run that ended."""
    from mcp.types import CallToolResult

    from .display import usage_cost

    record = ask.record
    if record is None:  # nothing ran: a mistake found before any model call
        return tool_error(ask.error)
    outcome = record.outcome
    found = AskResult(status=outcome.status, run_id=record.run_id, cost_usd=record.usage.cost_usd,
                      cost=usage_cost(record.usage),
                      agreement=outcome.counts or None)
    if ask.error is not None:
        pointer = f"The run is recorded as {outcome.status} (get_run {record.run_id[:8]})" if record.recorded else ""
        failed = tool_error(ask.error, *filter(None, [pointer]))
        failed.structured_content = found.model_dump()
        return failed
    found.confidence = record.synthesis.confidence
    notes = "; ".join(outcome.notes)
    status = f"Status: {outcome.status}" + (f" ({notes})" if notes else "")
    return CallToolResult(content=texts(printable(ask.answer), single_line(status)),
                          structured_content=found.model_dump())


def build(panels: Panels, max_wait: float):
    """The server and its three tools."""
    import anyio
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.types import CallToolResult

    from ..core.methods import names as method_names
    from ..storage import store

    from importlib.metadata import version

    server = MCPServer("llm-consortium", version=version("llm-consortium"), instructions=(
        "Ask a consortium: several models answer, a judge combines their answers. list_consortiums names "
        "those you may ask; ask returns the answer, or a run id with status running to pass to get_run later."
    ), log_level="WARNING")

    @server.tool(description=(
        "Ask a saved consortium a question: several models answer, a judge combines them. Returns the answer, "
        "and its status, confidence, agreement, cost and run id. A run longer than the server's --max-wait "
        "returns status running and its run id: call get_run with it later."
    ))
    async def ask(
        prompt: Annotated[str, Field(description="The question or task")],
        ctx: Context,
        consortium: Annotated[Optional[str], Field(
            description="A saved consortium's name (see list_consortiums); default: the server's")] = None,
        method: Annotated[Optional[str], Field(
            description=f"How a round is judged: {', '.join(method_names())} (default: the consortium's)")] = None,
        max_cost: Annotated[Optional[float], Field(
            description="Most dollars the run may spend (default: the consortium's)", ge=0)] = None,
    ) -> Annotated[CallToolResult, AskResult]:
        try:
            name, config = await anyio.to_thread.run_sync(panels.config, consortium, method, max_cost)
        except ConsortiumConfigError as exc:
            return tool_error(str(exc))
        job = Ask(asyncio.get_running_loop())
        job.start(name, config, clean(prompt))
        deadline = anyio.current_time() + max_wait
        progress, message = 0, ""
        while message is not None:  # None: the run is over
            # Until the run has an id to hand out, wait for it (its models are resolved by then: milliseconds).
            with anyio.move_on_after(deadline - anyio.current_time() if job.run_id else None) as waiting:
                message = await job.events.get()
            if waiting.cancelled_caught:
                break
            if message is not None:
                progress += 1
                await ctx.report_progress(progress, message=message)
        if message is None:
            return ask_result(job)
        await anyio.to_thread.run_sync(store.wait_recorded, job.run_id, RECORDED_SECONDS)
        running = AskResult(status="running", run_id=job.run_id)
        return CallToolResult(content=texts(f"The run is still going (status running): call get_run with run_id "
                                           f"{job.run_id} later for its answer."),
                              structured_content=running.model_dump())

    @server.tool(description="The saved consortiums this server may ask (as llm consortium list --json lists "
                             "them), and the one ask uses when given none.")
    async def list_consortiums() -> CallToolResult:
        found = {"consortiums": await anyio.to_thread.run_sync(panels.saved), "default": panels.default}
        return CallToolResult(content=texts(json.dumps(found, indent=2)), structured_content=found)

    @server.tool(description="A run's record by id or unique id prefix, as llm consortium inspect RUN --json "
                             "prints it: status, rounds, each member's answer, the verdict, cost.")
    async def get_run(
        run_id: Annotated[str, Field(description="The run's id (from ask), or a unique prefix of it")],
    ) -> CallToolResult:
        from ..core.record import result_dict
        from ..storage import store

        try:
            row = await anyio.to_thread.run_sync(store.find_run, run_id)
        except store.RunNotFound as exc:
            return tool_error(str(exc))
        if panels.allowed and row.get("name") not in panels.allowed:
            return tool_error(f"Run {run_id!r} is not a run of a consortium this server may ask "
                              f"({', '.join(panels.allowed)})")
        found = {**row, "result": result_dict(store.record_of_row(row))}
        return CallToolResult(content=texts(json.dumps(found, indent=2)), structured_content=found)

    return server


def serve(given: Optional[str], default: Optional[str], allowed: tuple, max_wait: float) -> None:
    """Serve MCP on stdin and stdout until the client closes stdin.

    ``ask`` given no consortium asks ``given`` (``--consortium``), else the
    default consortium (``default``) where this server may ask it;
    ``allowed`` (``--allow``) names the only ones it may ask (none: every
    saved one). A name given here that cannot be asked is one line, before
    the server starts.
    """
    from ..storage.store import load_config

    try:
        import mcp.server.mcpserver  # noqa: F401 - the extra's package: is it there?
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in ("mcp", "mcp_types"):
            raise
        from ..extras import install_command

        raise click.ClickException(f"llm consortium mcp needs the mcp extra ({missing} is missing): "
                                   f"{install_command('mcp')}") from None
    for name in (*allowed, *filter(None, [given])):
        saved = load_config(name)
        if saved is None or saved.get("ad_hoc"):
            raise click.ClickException(f"No saved consortium named {single_line(name)!r} (see 'llm consortium list')")
    if given and allowed and given not in allowed:
        raise click.ClickException(f"--consortium {single_line(given)} is not one of --allow {', '.join(allowed)}")
    if not given and allowed and default not in allowed:
        default = None
    build(Panels(given or default, allowed), max_wait).run("stdio")
