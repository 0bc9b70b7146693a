from pathlib import Path

import pytest

from llm_consortium.simulator import SimProvider, arbiter_xml

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


@pytest.fixture(scope="session")
def _sim_server():
    provider = SimProvider()
    yield provider
    provider.close()


@pytest.fixture
def sim(_sim_server, tmp_path, monkeypatch):
    """The simulated provider, reset, with llm's user dir in a fresh tmp dir and no real keys."""
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir()
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
