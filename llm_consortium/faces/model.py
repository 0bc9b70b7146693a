"""A consortium as an llm model: ``llm -m NAME``, ``llm chat``, ``llm -c``,
``llm.get_model(NAME)`` and ``llm.get_async_model(NAME)``.

The model runs the engine and yields the final synthesis once, when the
arbiter's reply that holds it is complete and parsed: a reply cut short and
retried, a round that a later one replaces, or a synthesis a member tried
to forge never reaches llm's output or logs, so what is printed, what
``llm logs`` stores and the recorded answer are the same text. Except when
it streams (llm's default, ``streams``: on a terminal or through the Python
API, never under ``--schema``): then the last round's synthesis is yielded
as the judge writes it (``judging.Panel.answer_reader``), and the rest of
the answer once it is checked; if the run's answer turns out not to begin
with what was streamed, a note goes to stderr and the answer follows a
``SEPARATOR``, and llm's output and log hold all three.
Under llm's own ``prompt`` and ``chat`` commands, with stderr a terminal,
the run's live progress is shown on stderr and collapsed before the answer
is yielded; a one-line summary follows once llm has printed the answer.
``-o`` options the consortium does not define go to its members.
llm imports this module on every command when a consortium is saved, so
the engine is imported only when a prompt runs.

Member and arbiter calls are not logged as llm responses (``llm -c`` would
then continue a member's conversation): they go to the plugin's own tables
through ``RunRecorder``; llm logs the consortium's own response.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from functools import cached_property
from typing import Optional

import click
import llm
from pydantic import ConfigDict, Field, create_model

from ..core.config import ConsortiumConfig, ConsortiumConfigError, ConsortiumError
from ..core.observer import Observer


class _OptionsBase(llm.Options):
    model_config = ConfigDict(extra="allow")


def _options_class():
    """The consortium's own ``-o`` options, one per setting declared in
    ``ConsortiumConfig`` (same help text), and ``progress``. Any other
    ``-o KEY VALUE`` goes to every member whose model accepts it (see
    ``handles.member_options``)."""
    fields = {}
    for setting in ConsortiumConfig.settings():
        meta = setting.metadata
        if meta["option"]:
            choices = f": {', '.join(meta['choices']())}" if meta["choices"] else ""
            fields[setting.name] = (Optional[meta["kind"]], Field(None, description=meta["help"] + choices))
    fields["progress"] = (Optional[bool], Field(
        None,
        description="Live progress and a one-line summary on stderr when it is a terminal (default true; "
        "false: off). Any other -o option goes to every member model that accepts it",
    ))
    return create_model("ConsortiumOptions", __base__=_OptionsBase, **fields)


ConsortiumOptions = _options_class()


def configured(config: ConsortiumConfig, options: ConsortiumOptions) -> ConsortiumConfig:
    """The saved configuration with this call's settings from ``-o`` applied
    (not ``progress``, and not the members' options)."""
    overrides = options.model_dump(exclude_none=True, exclude={"progress", *options.model_extra})
    return ConsortiumConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config


def parse_options(pairs) -> ConsortiumOptions:
    """``-o KEY VALUE`` pairs read as ``llm -m NAME`` reads them, for
    ``llm consortium run``; a bad value is one ``ConsortiumConfigError`` line."""
    import pydantic

    try:
        return ConsortiumOptions(**dict(pairs))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        raise ConsortiumConfigError(f"-o {error['loc'][0]} {error['input']}: {error['msg']}") from None


def split_history(prompt) -> tuple[list, str | None]:
    """Earlier turns and the system prompt, from ``prompt.messages``, this
    consortium's earlier answers as checked (``checked_history``).

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
    history = [checked_history(m) for m in messages if m.role != "system"]
    return history, system or None


def checked_history(message):
    """An earlier turn as the members are given it. After a streamed answer
    was withdrawn, llm keeps as the turn's text all that was yielded: the
    withdrawn text, ``SEPARATOR``, the checked answer; the members get the
    checked answer alone, where the run that gave it is recorded with the
    withdrawal (an answer that merely holds the separator stays whole)."""
    if message.role != "assistant":
        return message
    text = "".join(getattr(part, "text", "") or "" for part in message.parts)
    if SEPARATOR not in text:
        return message
    from ..storage.store import withdrawn_stream_answer

    pieces = text.split(SEPARATOR)
    for cut in range(1, len(pieces)):  # the withdrawn text or the answer may hold the separator too
        answer = SEPARATOR.join(pieces[cut:])
        if withdrawn_stream_answer(answer):
            return llm.assistant(answer)
    return message


class _Consortium:
    """What the sync and async models share."""

    can_stream = True
    needs_key = None
    supports_schema = True  # members answer in it; the final answer is checked against it
    supports_tools = True  # members that can call them do (llm -T); the consortium itself never asks for one
    Options = ConsortiumOptions

    def __init__(self, model_id: str, config: ConsortiumConfig, *, saved: bool = True, observers=(),
                 made_from: str | None = None):
        self.model_id = model_id
        self.config = config
        self.saved = saved
        self.observers = list(observers)
        # The saved consortium a run is made from, which its record names and whose
        # calibration (p(right)) it uses: its own, when saved; for ``llm consortium
        # run`` without -m, the default consortium (``made_from``).
        self.made_from = model_id if saved else made_from

    def __str__(self):
        return f"Consortium: {self.model_id}"

    @cached_property
    def attachment_types(self) -> set[str]:
        """Every type a member or the arbiter can read: an attachment goes to
        those that can, and the others are told it was left out. Resolved on
        first use, not when llm registers the model: llm runs every plugin's
        ``register_models`` on each model lookup, so looking the members up
        there would recurse, and would slow every llm command."""
        from ..core.handles import resolve_models

        try:
            handles = resolve_models(self.config.models + [self.config.arbiter])
        except ConsortiumConfigError:  # an unknown member: the prompt itself will say so
            return set()
        return set().union(*(getattr(h.model, "attachment_types", set()) or set() for h in handles.values()))

    def _start(self, prompt):
        """Validate and resolve everything (raising before any model call).

        ``llm chat`` shows an exception from a model as a traceback, and
        would fail the same way on every turn: there a mistake ends the chat
        with one line, as ``llm prompt`` shows it.
        """
        from ..core import schemas
        from ..core.engine import ConsortiumOrchestrator
        from ..storage.recorder import RunRecorder

        try:
            if cli_param("key"):  # llm passes --key only to models that take one key; this one has several
                raise ConsortiumConfigError(
                    "--key does not apply to a consortium: each member model uses its own key "
                    "(set them with 'llm keys set NAME' or their environment variables)"
                )
            if cli_param("tools_approve"):  # never ignored silently: a user asked to approve each call
                raise ConsortiumConfigError(
                    "--ta is not supported by a consortium: its members call tools at the same time, so calls "
                    "cannot be approved one by one (run without --ta to let members call the tools)"
                )
            for flag, param in (("--schema", "schema_input"), ("--schema-multi", "schema_multi")):
                schemas.check_text(cli_param(param), flag)  # as typed: llm has read non-JSON as its DSL
            config = configured(self.config, prompt.options)
            history, system = split_history(prompt)
            recorder = RunRecorder(self.made_from) if not no_log() else None
            progress = progress_display(config, prompt.options)
            observers = [o for o in (recorder, progress) if o] + self.observers
            if cli_param("tools_debug"):
                observers.append(tool_log(observers))
            orchestrator = ConsortiumOrchestrator(config=config, observers=observers)
            run = orchestrator.prepare(prompt.prompt, history=history, system=system,
                                       options=prompt.options.model_extra, schema=prompt.schema,
                                       attachments=prompt.attachments, tools=prompt.tools,
                                       chain_limit=cli_param("chain_limit"), calibration=calibration_of(self))
        except ConsortiumConfigError as exc:
            raise in_chat(exc)
        return orchestrator, run, recorder, progress

    @staticmethod
    @contextmanager
    def _running(run, recorder, progress):
        """Around a run: a run that fails, or is cancelled (Ctrl-C, SIGTERM
        and SIGHUP), keeps what had arrived, marked recorded or not; the live
        progress is closed before the answer or the error is printed."""
        try:
            yield
        except (ConsortiumError, KeyboardInterrupt) as exc:
            exc.record = recorded_record(run, recorder)
            raise in_chat(exc)
        finally:
            if progress:
                progress.close()

    @staticmethod
    def _finish(response, record):
        """The answer of the run's record, with the run's result as llm's
        response JSON. A run that ended with no answer (no verdict, or a
        budget that stopped it before any round was judged) ends as an error
        saying why (exit status 1); for no verdict, with every distinct
        answer and who gave it."""
        from ..core.record import result_dict

        usage = record.usage
        if usage.total or not usage.unreported:  # unknown is not 0: left unset
            response.set_usage(input=usage.input, output=usage.output, details=usage_details(usage))
        response.response_json = result_dict(record)
        if not record.outcome.has_answer:
            error = ConsortiumError(no_answer_message(record))
            error.record = record
            raise in_chat(error)
        return record.synthesis.synthesis

    def _end(self, response, run, recorder, progress):
        """After the run: its record and llm's response JSON (``_finish``),
        what is left of the answer to yield (``rest_of_answer``), and the
        summary line when the live progress was shown."""
        record = recorded_record(run, recorder)
        answer = self._finish(response, record)
        exit_if_strict(run.config, record)
        rest = rest_of_answer(run, answer)
        if rest:
            yield rest
        if progress:
            show_summary(record)


def calibration_of(model: _Consortium) -> dict | None:
    """The calibration stored with the saved consortium the model runs as, if any."""
    if not model.made_from:
        return None
    from ..storage.store import load_calibration

    return load_calibration(model.made_from)


def ask_and_log(asker, prompt: str, system: str | None, who: str) -> tuple[str, object]:
    """A saved consortium asked from a face that shows the run's record, not
    a stream (the viewer's asks, the MCP server): ``prompt`` through
    ``asker`` (a ``ConsortiumModel``, or an llm conversation it continues),
    its checked answer once, then logged in llm's log as ``llm -m`` logs it.
    Returns (answer, llm's response). A run's failure is raised as the model
    raises it; a failure to log is one line on stderr, naming ``who`` (the
    run itself is recorded)."""
    from ..storage.store import log_llm_response

    response = asker.prompt(prompt, system=system, stream=False)
    answer = "".join(response)  # the whole run: the model yields its checked answer once it ends
    try:
        log_llm_response(response)
    except Exception as exc:  # noqa: BLE001 - llm's logging code, or the database: the run is recorded
        print(f"{who}: could not add a run's answer to llm logs: {exc}", file=sys.stderr)
    return answer, response


def no_answer_message(record) -> str:
    """One line: there is no answer, why, and (no verdict) the distinct answers the members gave."""
    from ..core.safetext import single_line

    if record.outcome.status != "no_verdict":
        return "No answer: " + "; ".join(record.outcome.notes)

    answers = "; ".join(
        f"{single_line(c['answer'])[:200]!r} ({', '.join(c['members'])})" for c in record.synthesis.candidates
    )
    reason = single_line(record.synthesis.fallback or "no judge could be read")
    return f"No verdict ({reason}) and no answer has a majority. The members answered: {answers}"


def in_chat(exc: BaseException) -> BaseException:
    """The exception to raise for ``exc``: under ``llm chat``, which shows a
    model's exception as a traceback, a failed run or a mistake ends the
    chat with one line, as ``llm prompt`` shows it."""
    if cli_command() == "chat" and isinstance(exc, (ConsortiumError, ConsortiumConfigError)):
        return click.ClickException(str(exc))
    return exc


def usage_details(usage) -> dict | None:
    """What llm logs as the usage's details (``llm logs -u`` shows them) of
    a run's ``Usage``: the dollars, where any part of them is known,
    and how many calls reported no tokens. A cost wholly unknown is left
    out, never 0."""
    details = {}
    if usage.cost_usd is not None:
        details["cost_usd"] = usage.cost_usd
    elif round(usage.cost, 8):
        details.update(cost_usd=None, priced_usd=round(usage.cost, 8), unpriced_calls=usage.unpriced)
    if usage.unreported:
        details["calls_without_usage"] = usage.unreported
    return details or None


def recorded_record(run, recorder):
    """The run's ``RunRecord``, saying whether logs.db holds all of it,
    final status included (``recorded``): nothing may point at the record
    (``llm consortium inspect``) unless it does."""
    from ..core.record import record_of

    record = record_of(run)
    record.recorded = recorder is not None and recorder.recorded(run.run_id)
    return record


def no_log() -> bool:
    """Whether the command running this model was given ``--no-log``.

    llm does not tell models; but on the command line a model runs inside
    a click command, llm's ``prompt`` (``llm -m NAME --no-log``) or
    ``llm consortium run --no-log``, and both name the flag ``no_log``.
    (``llm logs off`` is checked by the recorder itself.)
    """
    return bool(cli_param("no_log"))


def cli_param(name: str):
    """A parameter of the click command running this model; None off the
    command line (the Python API). llm passes ``--key`` only to a
    ``KeyModel``, but its ``prompt`` and ``chat`` commands name it ``key``."""
    context = click.get_current_context(silent=True)
    return context.params.get(name) if context else None


def cli_command() -> str | None:
    """The name of the click command running this model; None off the command line."""
    context = click.get_current_context(silent=True)
    return context.command.name if context else None


def tool_log(observers):
    """``--td``: the members' tool calls on stderr, above the live progress
    when there is one (``llm consortium run`` brings its own)."""
    from .display import Progress, ToolLog

    return ToolLog(sys.stderr, next((o for o in observers if isinstance(o, Progress)), None))


def progress_display(config: ConsortiumConfig, options: ConsortiumOptions):
    """Live progress on stderr under llm's own ``prompt`` and ``chat``
    commands when stderr is a terminal, unless ``-o progress false``.
    (``llm consortium run`` shows its own.)"""
    if options.progress is False or cli_command() not in ("prompt", "chat"):
        return None
    from .terminal import is_terminal

    if not is_terminal(sys.stderr, "stderr"):
        return None
    from .display import Progress

    return Progress(sys.stderr, config.arbiter)


def exit_if_strict(config: ConsortiumConfig, record) -> None:
    """Under llm's ``prompt`` command with ``-o strict 1``, an answer whose
    status is not success ends the command with exit status 3, once the
    answer and the summary are out (callbacks on close run last-in,
    first-out: this one is registered first)."""
    from ..core.outcome import exit_code

    code = exit_code(record.outcome.status, config.strict, record.outcome.has_answer)
    context = click.get_current_context(silent=True)
    if code and context and context.command.name == "prompt":
        context.call_on_close(lambda: sys.exit(code))


def show_summary(record) -> None:
    """The run's one-line summary on stderr, after the answer llm prints.

    ``llm chat`` has printed the answer once the model's last chunk is
    taken, and ends its line (``print()``) once the model returns: on one
    terminal the summary starts a line of its own and leaves that newline to
    end it. ``llm prompt --no-stream`` prints the answer only after the model
    returns, so under ``prompt`` the summary waits for the command to end.
    """
    from .display import summary_line
    from .terminal import is_terminal

    line = summary_line(record)
    context = click.get_current_context()
    if context.command.name == "chat":
        shared = is_terminal(sys.stdout, "stdout")
        click.echo(("\n" if shared else "") + line, err=True, nl=not shared)
    else:
        context.call_on_close(lambda: click.echo(line, err=True))


# Between an answer streamed and then withdrawn, and the run's answer.
SEPARATOR = "\n\n---\n\n"


def streams(stream: bool) -> bool:
    """Whether a call streams its answer as the judge writes it: llm asked
    for a stream (``--no-stream`` did not), and, on the command line,
    stdout is a terminal (a pipe gets the checked answer once)."""
    from .terminal import is_terminal

    return stream and (cli_command() is None or is_terminal(sys.stdout, "stdout"))


class AnswerChunks(Observer):
    """Hands each ``answer_chunk`` to ``put`` (a queue the model's
    ``execute`` yields from)."""

    def __init__(self, put):
        self.put = put

    def answer_chunk(self, run, round_number, text):
        self.put(text)


def streamed(orchestrator, run):
    """Run ``run`` on the shared loop (``runner``), yielding its answer's
    chunks as they come; returns the run's result."""
    import queue

    from ..core.runner import Submitted, signals_interrupt

    chunks = queue.Queue()
    orchestrator.observers.append(AnswerChunks(chunks.put))
    with signals_interrupt():
        submitted = Submitted(orchestrator.execute(run))
        submitted.future.add_done_callback(lambda _: chunks.put(None))
        try:
            while (text := chunks.get()) is not None:
                yield text
            return submitted.future.result()
        finally:
            if not submitted.future.done():  # Ctrl-C, or the reader stopped reading
                submitted.cancel()
            tell_withdrawn(run)


def tell_withdrawn(run) -> None:
    """The note on stderr, on a line of its own, when the answer streamed was withdrawn."""
    if run.stream_withdrawn:
        from .display import note_line

        click.echo("\n" + note_line(run.stream_withdrawn), err=True)


def rest_of_answer(run, answer: str) -> str:
    """What is left to yield of ``answer``: all of it when nothing was
    streamed, the rest of it when the stream began it, or all of it after
    ``SEPARATOR`` when the stream was withdrawn."""
    if run.stream_withdrawn:
        return SEPARATOR + answer
    return answer[len(run.streamed):]


class ConsortiumModel(_Consortium, llm.Model):
    def execute(self, prompt, stream, response, conversation):
        from ..core.runner import run_coroutine

        orchestrator, run, recorder, progress = self._start(prompt)
        run.stream = streams(stream)
        with self._running(run, recorder, progress):
            if run.stream:
                yield from streamed(orchestrator, run)
            else:
                run_coroutine(orchestrator.execute(run))
        yield from self._end(response, run, recorder, progress)


class AsyncConsortiumModel(_Consortium, llm.AsyncModel):
    async def execute(self, prompt, stream, response, conversation):
        import asyncio

        orchestrator, run, recorder, progress = self._start(prompt)
        run.stream = streams(stream)
        with self._running(run, recorder, progress):
            if run.stream:
                chunks = asyncio.Queue()
                orchestrator.observers.append(AnswerChunks(chunks.put_nowait))
                task = asyncio.ensure_future(orchestrator.execute(run))
                task.add_done_callback(lambda _: chunks.put_nowait(None))
                try:
                    while (text := await chunks.get()) is not None:
                        yield text
                finally:
                    if not task.done():  # cancelled, or the reader stopped reading
                        task.cancel()
                    tell_withdrawn(run)
                task.result()  # the run's failure, if it failed
            else:
                await orchestrator.execute(run)
        for text in self._end(response, run, recorder, progress):
            yield text
