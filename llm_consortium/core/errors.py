"""What went wrong in a model call, said safely: which errors are worth
another attempt, which say the prompt does not fit, one line for each with
its secrets redacted, and a plugin's ``BaseException`` carried as an
ordinary failure."""

from __future__ import annotations

import asyncio
import re
from contextlib import contextmanager

from .config import ConsortiumError
from .safetext import clean

# HTTP statuses worth another try: rate limits, timeouts, server trouble.
TRANSIENT_STATUSES = {408, 409, 425, 429} | set(range(500, 600))
# Exception class names (from openai, anthropic, httpx, ...) that mean the
# connection failed rather than the request being refused.
TRANSIENT_NAMES = ("Timeout", "Connection", "RateLimit", "Overloaded", "Unavailable")
# Error messages are shown and stored up to this many characters (after redaction).
MAX_ERROR_CHARS = 400
# Secrets that a provider's error message might repeat back.
_SECRET_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?<=[?&]key=)[^&\s'\"]+|(?<=Bearer )[^\s'\"]+)")
# Shorter configured values are not treated as secrets: replacing every
# "json" or "1" in a message would hide the message, not a key.
MIN_SECRET_CHARS = 8


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
