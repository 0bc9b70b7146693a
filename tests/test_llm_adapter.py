"""llm_consortium.llm_adapter, the one module that uses llm's unpublished
functions, driven through llm's real objects: its user directory, its
templates, fragments, tools and logs.db, and a model answering from the
simulated provider on 127.0.0.1.

These tests need only llm, pytest and this package, so that .ci/run can run
them under llm 0.32 (the oldest pyproject.toml accepts) as well as under the
version the rest of the suite uses: a new llm release that moves one of these
functions fails here first.
"""

import io
import json
import sys
from importlib.metadata import version

import click
import llm
import pytest
import sqlite_utils
from click.testing import CliRunner
from llm.cli import cli

from llm_consortium import llm_adapter

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
LLM_VERSION = tuple(int(part) for part in version("llm").split(".")[:2])


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """llm's user directory, empty, in a temporary folder."""
    path = tmp_path / "llm-user"
    path.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(path))
    return path


def llm_command(*args):
    """llm's own command line, in-process."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def memory_db():
    database = sqlite_utils.Database(memory=True)
    llm_adapter.migrate(database)
    return database


def test_an_attachment_is_a_file_read_as_llm_reads_it(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(PNG)
    attachment = llm_adapter.attachment(str(path))
    assert isinstance(attachment, llm.Attachment)
    assert attachment.content_bytes() == PNG
    assert attachment.resolve_type() == "image/png"


def test_an_attachment_of_dash_is_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(PNG)))
    attachment = llm_adapter.attachment("-")
    assert attachment.content_bytes() == PNG
    assert attachment.resolve_type() == "image/png"


def test_a_missing_attachment_is_unresolved_in_llms_words(tmp_path):
    with pytest.raises(llm_adapter.Unresolved, match="does not exist"):
        llm_adapter.attachment(str(tmp_path / "missing.png"))


def test_a_saved_template_is_loaded_and_applied_as_llm_applies_it(user_dir):
    (user_dir / "templates").mkdir()
    (user_dir / "templates" / "brief.yaml").write_text("system: Be brief.\nprompt: 'Summarise: $input'\n")
    (user_dir / "templates" / "named.yaml").write_text("prompt: 'Hello $name'\n")
    template = llm_adapter.template("brief")
    assert isinstance(template, llm.Template)
    assert template.vars() == {"input"}
    assert template.evaluate("the text", {}) == ("Summarise: the text", "Be brief.")
    # the error faces/cli.py's apply_template catches, by its public name
    with pytest.raises(llm.Template.MissingVariables):
        llm_adapter.template("named").evaluate("", {})


def test_a_missing_template_is_unresolved_in_llms_words(user_dir):
    with pytest.raises(llm_adapter.Unresolved, match="Invalid template: missing"):
        llm_adapter.template("missing")


def test_a_schema_is_read_as_llm_schema_reads_it(user_dir, tmp_path):
    database = memory_db()
    as_json = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert llm_adapter.schema(database, json.dumps(as_json)) == as_json
    assert llm_adapter.schema(database, "name, age int") == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(as_json))
    assert llm_adapter.schema(database, str(path)) == as_json
    (user_dir / "templates").mkdir()
    (user_dir / "templates" / "typed.yaml").write_text(f"schema_object: {json.dumps(as_json)}\n")
    assert llm_adapter.schema(database, "t:typed") == as_json


def test_a_schema_id_that_is_not_saved_is_refused_in_llms_words(user_dir):
    with pytest.raises(click.ClickException, match="Invalid schema"):
        llm_adapter.schema(memory_db(), "abc123")


def test_the_schema_dsl_refuses_an_unknown_type_from_llm_0_36_on(user_dir):
    """A difference between the versions: llm 0.32 reads an unknown type as
    a string field; 0.36 refuses it."""
    if LLM_VERSION >= (0, 36):
        with pytest.raises(click.ClickException, match="unknown type 'colour'"):
            llm_adapter.schema(memory_db(), "name, shade colour")
    else:
        assert llm_adapter.schema(memory_db(), "name, shade colour")["properties"]["shade"] == {"type": "string"}


def test_fragments_are_files_and_aliases_saved_with_llm(user_dir, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Otters hold hands.")
    llm_command("fragments", "set", "otters", str(path))
    database = sqlite_utils.Database(user_dir / "logs.db")
    assert llm_adapter.fragments(database, [str(path), "otters"]) == ["Otters hold hands."] * 2
    with pytest.raises(llm_adapter.Unresolved, match="Fragment 'badgers' not found"):
        llm_adapter.fragments(database, ["badgers"])


class Counter(llm.Toolbox):
    """A toolbox with a constructor argument, as ``-T 'Counter(3)'`` gives one."""

    def __init__(self, start: int = 0):
        self.count = start

    def increment(self) -> int:
        "Add one to the count."
        self.count += 1
        return self.count


@pytest.fixture
def counter_plugin():
    class Plugin:
        @llm.hookimpl
        def register_tools(self, register):
            register(Counter)

    llm.pm.register(Plugin(), name="adapter-test-tools")
    yield
    llm.pm.unregister(name="adapter-test-tools")


def test_tools_are_named_as_llm_T_names_them(user_dir, counter_plugin):
    function, toolbox, configured = llm_adapter.tools(["llm_version", "Counter", 'Counter({"start": 3})'])
    assert isinstance(function, llm.Tool) and function.name == "llm_version"
    assert function.implementation() == version("llm")
    assert isinstance(toolbox, Counter) and toolbox.count == 0
    assert configured.count == 3
    assert [tool.name for tool in configured.tools()] == ["Counter_increment"]


def test_an_unknown_tool_is_refused_with_the_ones_there_are(user_dir):
    with pytest.raises(click.ClickException, match="Tool\\(s\\) nope not found. Available tools: ") as raised:
        llm_adapter.tools(["nope"])
    # In the order llm loaded the plugins; Consortium is this plugin's own toolbox (faces/tool.py).
    available = raised.value.message.split("Available tools: ")[1].split(", ")
    assert {"llm_version", "Consortium"} <= set(available)


def test_migrate_gives_llms_tables_and_runs_again_harmlessly():
    database = memory_db()
    llm_adapter.migrate(database)
    assert {"threads", "turns", "responses", "fragments"} <= set(database.table_names())


def test_a_logged_answer_is_in_llm_logs_and_continues_as_a_conversation(sim):
    sim.add("m1", reply="Otters hold hands.")
    response = llm.get_model("m1").prompt("What do otters do?", system="Be brief.")
    response.text()
    path = llm.user_dir() / "logs.db"
    database = sqlite_utils.Database(path)
    llm_adapter.log_response(database, response)
    database.close()

    logged = json.loads(llm_command("logs", "--json", "-n", "1"))
    assert [(row["prompt"], row["response"], row["model"]) for row in logged] == [
        ("What do otters do?", "Otters hold hands.", "m1")]

    conversation = llm_adapter.conversation(None, path)  # the most recent
    assert conversation.id == logged[0]["conversation_id"]
    assert conversation.model.model_id == "m1"
    assert llm_adapter.conversation(conversation.id, path).id == conversation.id

    # continued, the model is sent the history (llm 0.36 keeps it off
    # conversation.responses: it arrives in the prompt's messages)
    sim.add("m1", reply="They sleep.")
    assert conversation.prompt("And at night?").text() == "They sleep."
    sent = [(m["role"], m["content"]) for m in sim.calls("m1")[-1].messages]
    assert sent == [("system", "Be brief."), ("user", "What do otters do?"),
                    ("assistant", "Otters hold hands."), ("user", "And at night?")]


def test_models_from_extra_openai_models_yaml_come_from_llms_openai_module(sim):
    """What core/pricing.py reads to price a model by its api_base."""
    sim.add("m1", reply="hi")
    assert {type(llm.get_model("m1")).__module__, type(llm.get_async_model("m1")).__module__} == {
        llm_adapter.OPENAI_MODELS_MODULE}
    assert llm.get_model("m1").api_base.startswith("http://127.0.0.1:")


def test_an_unknown_conversation_is_refused_and_none_is_none(sim):
    path = llm.user_dir() / "logs.db"
    assert llm_adapter.conversation(None, path) is None
    with pytest.raises(click.ClickException, match="No conversation found with id=nope"):
        llm_adapter.conversation("nope", path)


def test_openai_compatible_models_reach_a_server_through_llms_client_and_stay_unlisted(sim, monkeypatch):
    """What ``llm consortium demo`` uses: llm's own OpenAI model objects for
    a server no extra-openai-models.yaml names. A user's OpenAI key is never
    sent to it (llm's client sends DUMMY_KEY), and ``llm models`` never lists
    them."""
    import asyncio

    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    sim.register("loopback", reply="Hello from the loopback.")  # no YAML written
    sync_model, async_model = llm_adapter.openai_compatible("loopback", sim.base_url)
    assert isinstance(sync_model, llm.KeyModel) and isinstance(async_model, llm.AsyncKeyModel)
    assert sync_model.prompt("Hi?").text() == "Hello from the loopback."

    async def ask():
        return await async_model.prompt("Hi again?").text()

    assert asyncio.run(ask()) == "Hello from the loopback."
    requests = sim.calls("loopback")
    assert len(requests) == 2 and all(r.headers["authorization"] == "Bearer DUMMY_KEY" for r in requests)
    assert requests[1].stream and requests[1].user == "Hi again?"
    assert not (llm.user_dir() / "extra-openai-models.yaml").exists()
    assert "loopback" not in llm_command("models")
    assert type(sync_model).__module__ == llm_adapter.OPENAI_MODELS_MODULE  # priced as core/pricing.py reads it
