"""The parts of llm this plugin uses that llm does not publish as its API.

Everything else the package asks of llm is a name the ``llm`` package
itself exports: its documented Python API (models, prompts, responses and
``Response.from_dict``, tool chains, messages, ``llm.user_dir()``) and a
few plainly public helpers (``llm.get_models_with_aliases()``,
``llm.load_keys()``). What is here has no public equivalent: the flags
``llm consortium`` shares with ``llm prompt`` must read their values
exactly as llm's own command line does, the answer must be logged where
``llm logs`` shows it, and pricing must know which models are llm's own
OpenAI models. llm keeps those in ``llm.cli``, ``llm.utils``,
``llm.migrations`` and its module layout, and its documentation calls its
SQLite logging "not yet part of the stable, documented Python API"; and
``llm consortium demo`` needs OpenAI-compatible models that no
``extra-openai-models.yaml`` lists, which only llm's own OpenAI model
classes make (``openai_compatible``). Each
use is one name below, so that a new llm release is checked in one module:
``tests/test_llm_adapter.py`` drives each through llm's real objects, and
``.ci/run`` runs those tests under llm 0.32 (the oldest that
pyproject.toml accepts) as well as under the version the rest of the
suite runs with.

Checked against llm 0.32 and llm 0.36: every function here has the same
signature and behaviour in both, but for one thing: 0.36's schema DSL
refuses an unknown type and a repeated field (``click.BadParameter``),
where 0.32 reads the type as a string and keeps the field twice in
``required`` (then refused as a JSON Schema by ``core/schemas.py``). Other
differences do not reach the package: 0.36 adds
``llm.ConversationNotSupported``, ``Model.supports_conversation`` and
``AsyncResponse.log_to_db`` (none of them used here) and lets ``llm -t``
be repeated (``llm consortium -t`` takes one); 0.32 imports ``httpx``
without declaring it (the openai releases of its day brought it; today's
bring ``httpx2``), so llm 0.32 installed today needs ``httpx`` beside it.
``openai_compatible`` was checked against both with the classes' source
side by side: ``Chat`` and ``AsyncChat`` take the same keyword arguments,
and read ``api_base``, ``model_name`` and ``needs_key`` the same way, in
0.32 and 0.36.
The toolbox of ``faces/tool.py`` needs nothing here: ``llm.Toolbox``,
``llm.Tool.function`` and the ``register_tools`` hook are llm's published
plugin API, the same in 0.32 and 0.36 (``tests/test_tool.py`` passes under
both), and both run an async tool in a sync chain with ``asyncio.run``.

Nothing here is imported before it is used: importing ``llm.cli`` loads
llm's whole command line, and doing so while llm loads its plugins
re-enters that loading.
"""

from __future__ import annotations


#: The module of llm's own OpenAI models, and of those ``extra-openai-models.yaml``
#: adds: llm has no public way to ask which plugin registered a model, and
#: ``core/pricing.py`` prices these by their ``api_base``.
OPENAI_MODELS_MODULE = "llm.default_plugins.openai_models"


class Unresolved(Exception):
    """llm could not resolve an attachment, a template or a fragment; the
    message is llm's own."""


def attachment(value: str):
    """The ``llm.Attachment`` of a path, a URL or ``-`` (stdin), resolved as
    ``llm -a`` resolves one (``llm.cli.resolve_attachment``)."""
    from llm.cli import AttachmentError, resolve_attachment

    try:
        return resolve_attachment(value)
    except AttachmentError as exc:
        raise Unresolved(str(exc)) from None


def template(name: str):
    """The ``llm.Template`` that ``llm -t name`` would use: a saved template,
    or one from a template loader's ``prefix:`` (``llm.cli.load_template``)."""
    from llm.cli import LoadTemplateError, load_template

    try:
        return load_template(name)
    except LoadTemplateError as exc:
        raise Unresolved(str(exc)) from None


def schema(database, schema_input: str) -> dict:
    """A ``--schema`` value as ``llm --schema`` reads it: JSON, a file, llm's
    schema DSL, a saved schema's id or ``t:template``, looked up in
    ``database`` (a ``sqlite_utils.Database``; ``llm.utils.resolve_schema_input``).
    Raises ``click.ClickException`` with llm's message."""
    from llm.cli import load_template
    from llm.utils import resolve_schema_input

    return resolve_schema_input(database, schema_input, load_template)


def fragments(database, values) -> list[str]:
    """The text of each ``-f`` value (an alias or hash saved in ``database``,
    a file, a URL or a fragment loader's ``prefix:``), as ``llm -f`` resolves
    them (``llm.cli.resolve_fragments``)."""
    from llm.cli import FragmentNotFound, resolve_fragments

    try:
        return [str(fragment) for fragment in resolve_fragments(database, values)]
    except FragmentNotFound as exc:
        raise Unresolved(str(exc)) from None


def tools(specs) -> list:
    """``-T`` values as ``llm -T`` reads them: a registered tool's name, or a
    Toolbox with its arguments (``Name(...)``). An unknown name raises
    ``click.ClickException`` naming the tools there are (``llm.cli._gather_tools``)."""
    from llm.cli import _gather_tools

    return _gather_tools(list(specs), [])


def conversation(conversation_id: str | None, database_path):
    """llm's conversation ``conversation_id`` (the most recent when None)
    from the logs.db at ``database_path``, with its earlier responses, as
    ``llm -c`` loads it; None when there is none. llm migrates the database
    first. An unknown id raises ``click.ClickException``, a conversation
    whose model is gone ``llm.UnknownModelError`` (``llm.cli.load_conversation``)."""
    from llm.cli import load_conversation

    return load_conversation(conversation_id, database=str(database_path))


def migrate(database) -> None:
    """Bring ``database`` (a ``sqlite_utils.Database``) to llm's current
    logs.db schema (``llm.migrations.migrate``)."""
    from llm.migrations import migrate as llm_migrate

    llm_migrate(database)


def log_response(database, response) -> None:
    """Log a finished sync ``llm.Response`` into ``database`` as ``llm``
    logs its own, so that ``llm logs`` shows it and ``llm -c`` continues
    its conversation (``Response.log_to_db``, after llm's migrations)."""
    migrate(database)
    response.log_to_db(database)


def openai_compatible(model_id: str, api_base: str, model_name: str | None = None) -> tuple:
    """(sync, async) llm models of an OpenAI-compatible server at
    ``api_base``: the objects llm makes for an ``extra-openai-models.yaml``
    entry with ``model_id``, ``model_name`` (default ``model_id``) and
    ``api_base`` (``llm.default_plugins.openai_models.Chat`` and
    ``AsyncChat``, with no key needed: llm's client sends ``DUMMY_KEY``),
    made without writing that file, so that ``llm models`` never lists them.
    Calls go through llm's real OpenAI client. The engine takes them as
    ``ConsortiumOrchestrator(given_models=...)``."""
    from llm.default_plugins.openai_models import AsyncChat, Chat

    pair = tuple(cls(model_id=model_id, model_name=model_name or model_id, api_base=api_base)
                 for cls in (Chat, AsyncChat))
    for model in pair:
        model.needs_key = None  # as llm sets it for an entry with an api_base
    return pair
