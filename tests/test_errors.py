"""Unit tests of errors.py's pure rules: which errors are worth another
attempt (``is_transient``) and what is removed from an error before it is
shown or stored (``redact``)."""

import json
import os

import llm
import pytest

from llm_consortium.core.errors import is_transient, redact


class StatusError(Exception):
    def __init__(self, status_code, message="error"):
        super().__init__(message)
        self.status_code = status_code


class WithResponse(Exception):
    """A status on the exception's response, as httpx's HTTPStatusError has it."""

    def __init__(self, status_code):
        super().__init__("error")
        self.response = type("Response", (), {"status_code": status_code})()


class APIConnectionError(Exception):
    pass


class ReadTimeout(Exception):
    pass


class ValidationError(Exception):
    pass


@pytest.mark.parametrize("exc, expected", [
    (StatusError(429), True), (StatusError(500), True), (StatusError(503), True), (StatusError(408), True),
    (StatusError(400), False), (StatusError(401), False), (StatusError(404), False),
    (WithResponse(502), True), (WithResponse(403), False),
    (APIConnectionError("reset"), True), (ReadTimeout("slow"), True), (ValidationError("bad"), False),
    # A status decides before the class name: a 400 named like a timeout is not retried.
    (type("RequestTimeoutError", (StatusError,), {})(400), False),
    # The same prompt will not fit next time either.
    (StatusError(500, "This model's maximum context length is 8192 tokens"), False),
])
def test_is_transient(exc, expected):
    assert is_transient(exc) is expected


@pytest.fixture
def no_keys(tmp_path, monkeypatch):
    """An empty llm user dir and no *_KEY or *_TOKEN variables: only the secrets a test adds."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    for name in [n for n in os.environ if n.endswith(("_KEY", "_TOKEN"))]:
        monkeypatch.delenv(name)
    return tmp_path


def test_redact_removes_key_shaped_strings(no_keys):
    assert redact("Incorrect API key provided: sk-proj-abc123XYZ.") == "Incorrect API key provided: [redacted]."
    assert redact("GET https://x.test/v1?key=AIzaSecret&alt=sse") == "GET https://x.test/v1?key=[redacted]&alt=sse"
    assert redact("header 'Authorization: Bearer tok.en-1'") == "header 'Authorization: Bearer [redacted]'"
    assert redact("nothing secret here") == "nothing secret here"


def test_redact_removes_every_secret_llm_knows_longest_first(no_keys, monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", "acme-secret-1")
    monkeypatch.setenv("ACME_TOKEN", "acme-secret-1-and-more")
    monkeypatch.setenv("SHORT_KEY", "json")  # too short to be a key: not hidden everywhere
    (no_keys / "keys.json").write_text(json.dumps({"other": "stored-key-0042"}))
    (no_keys / "extra-openai-models.yaml").write_text(
        '- model_id: x\n  api_key: "yaml-key-000001"\n  headers:\n    X-Api-Key: "header-key-0001"\n'
    )
    text = "got acme-secret-1-and-more, acme-secret-1, stored-key-0042, yaml-key-000001, header-key-0001 as json"
    assert redact(text) == "got [redacted], [redacted], [redacted], [redacted], [redacted] as json"
    assert llm.user_dir() == no_keys


def test_a_plugin_s_base_exception_is_described_as_it_was_raised():
    from llm_consortium.core.errors import PluginAborted, describe

    assert describe(PluginAborted(SystemExit(3))) == "SystemExit: 3"
    assert describe(PluginAborted(KeyboardInterrupt())) == "KeyboardInterrupt: no message"


def test_a_failed_connection_names_host_and_port_but_never_credentials(no_keys):
    from llm_consortium.core.errors import describe

    class Request:
        url = "https://user:hunter22@llm.example:8443/v1/chat/completions?key=AIzaSecret"

    exc = APIConnectionError("Connection error.")
    exc.request = Request()
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as os_error:
            raise RuntimeError("All connection attempts failed") from os_error
    except RuntimeError as cause:
        exc.__cause__ = cause
    assert describe(exc) == ("APIConnectionError: Connection error. (llm.example:8443: "
                             "ConnectionRefusedError: [Errno 111] Connection refused)")


def test_an_httpx_error_without_its_request_is_still_described():
    import httpx2

    from llm_consortium.core.errors import describe

    try:
        try:
            raise OSError("All connection attempts failed")
        except OSError as cause:
            raise httpx2.ConnectError("All connection attempts failed") from cause
    except httpx2.ConnectError as exc:
        assert describe(exc) == "ConnectError: All connection attempts failed"
