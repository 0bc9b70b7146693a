import os
import shutil
import sys
from pathlib import Path

import pytest

# Python's default, bytecode caches, even where PYTHONDONTWRITEBYTECODE is set
# (as on some CI machines): otherwise every test process, and every llm process
# the tests start, compiles this package and rewrites the test modules again.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    sys.dont_write_bytecode = False

from llm_consortium.evaluation.simulator import SimProvider, arbiter_xml

TRUSTS_NOTHING = Path(__file__).parent / "trusts-nothing.pem"
ENV_VARS_TO_CLEAR = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "LLM_OPENAI_SHOW_RESPONSES",
    "LLM_MODEL",
    "LLM_LOAD_PLUGINS",
)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The whole suite runs in two processes per core when pytest-xdist is
    installed (it is in the test extra): a third of its time is waiting (on
    simulated latency, llm processes, timeouts), so one per core leaves the
    cores idle (on 2 cores: about 64 s with 2 processes, 56 s with 4; see
    benchmarks/quick_loop.py). Naming test files or ``-n`` (``-n 0`` for one
    process) decides instead."""
    named = [arg for arg in config.invocation_params.args if not str(arg).startswith("-") and "/" in str(arg)
             or str(arg).endswith(".py")]
    worker = "PYTEST_XDIST_WORKER" in os.environ  # a worker must not start workers of its own
    if config.pluginmanager.hasplugin("xdist") and config.option.numprocesses is None and not named and not worker:
        config.option.numprocesses = 2 * len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def _no_click_context_left():
    """Each test starts with no click context on its thread. An in-process
    CLI run that ends with ``-o strict 1`` exits from one of click's close
    callbacks (``faces.model.exit_if_strict``), and click then leaves that
    context pushed: a real ``llm`` process exits there, but in this process
    the next test would look like it runs under llm's ``prompt`` command."""
    import click

    while click.get_current_context(silent=True) is not None:
        click.globals.pop_context()
    yield


def pytest_collection_modifyitems(items):
    """The longest tests first (the Quick Start's install, the real model,
    the browser), so that under pytest-xdist they run beside the many short
    ones instead of after them."""
    slow = ("install", "local_model", "browser")
    items.sort(key=lambda item: not any(item.get_closest_marker(name) for name in slow))


@pytest.fixture(scope="session")
def _sim_server():
    provider = SimProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def _llm_logs_db(tmp_path_factory):
    """A logs.db as llm's migrations and ours leave it (the tables, no rows).
    Both run on first use, about 0.1 s of CPU and a dozen commits, in every
    test that starts from an empty user dir, and few are about that."""
    import sqlite_utils
    from llm.migrations import migrate

    from llm_consortium.storage import store

    path = tmp_path_factory.mktemp("llm-logs") / "logs.db"
    migrate(sqlite_utils.Database(path))
    store.connect(path).close()
    return path


@pytest.fixture
def sim(request, _sim_server, _llm_logs_db, tmp_path, monkeypatch):
    """The simulated provider, reset, with llm's user dir in a fresh tmp dir and no real keys.

    The user dir holds a logs.db that llm and this plugin have migrated
    already; a test marked ``empty_user_dir`` (about a first run, or
    about what is written or not) starts from an empty one instead."""
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir()
    if not request.node.get_closest_marker("empty_user_dir"):
        shutil.copy(_llm_logs_db, user_dir / "logs.db")
    monkeypatch.setenv("LLM_USER_PATH", str(user_dir))
    for name in ENV_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    # llm builds a new OpenAI client, and so a new TLS context, for every
    # prompt; loading the system's CA bundle into it costs ~30 ms of CPU each
    # time. The simulated provider is plain HTTP on 127.0.0.1, so the tests
    # (and the llm processes they start) trust one certificate, whose key
    # was thrown away: the same client code, a fraction of the cost.
    monkeypatch.setenv("SSL_CERT_FILE", str(TRUSTS_NOTHING))
    _sim_server.reset()
    yield _sim_server


@pytest.fixture
def panel(sim):
    """Two members that agree on 42 and an arbiter confident in it."""
    sim.add("m1", reply="Member one says 42.")
    sim.add("m2", reply="Member two says 42.")
    sim.add("judge", reply=arbiter_xml("The answer is 42.", 0.9, analysis="Both agree.", dissent="none"))
    return sim
