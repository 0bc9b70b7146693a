"""A simulated OpenAI-compatible provider on 127.0.0.1 with scripted models.

A development and evaluation tool, not part of a consortium run: the
package's ``__init__`` never imports it, so it costs ``llm`` nothing.
Tests and benchmarks drive llm's real OpenAI client against it: ``add()``
registers a model here and lists it in ``extra-openai-models.yaml`` in the
current llm user dir, so ``llm.get_model(name)`` talks to this server.
``python -m llm_consortium.evaluation.simulator`` serves a demo panel on its own (see
``main``), and ``llm consortium demo`` serves it in-process (``register_demo``).
Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import llm

CHAT_PATH = "/v1/chat/completions"
WORDS_PER_CHUNK = 3
MAX_CHUNKS = 100
# What errors that clients retry (429 and 5xx) ask them to wait, as real
# providers do with Retry-After: short, so that the OpenAI client's own
# retries (by default 0.5 s, then 1 s) don't add seconds to every test.
RETRY_AFTER_MS = 5
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
# How a streamed request can hear of a failure, besides its HTTP status
# (``stream_error``): as llama.cpp's servers tell it, inside a 200 stream.
STREAM_ERRORS = (
    "empty",  # no event at all (llama-cpp-python's server, on a prompt over its context)
    "error_line",  # an ``error: {...}`` line, which SSE clients skip (older llama.cpp builds)
    "data",  # a ``data: {"error": {...}}`` event, which the OpenAI client raises
)


def _content_text(content: Any) -> str:
    """Message content is a string, a list of {"type": "text", ...} parts, or None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _count_tokens(text: str) -> int:
    return len(text.split())


@dataclass
class Request:
    """One request the provider received."""

    model: str
    body: dict
    stream: bool
    started: float
    headers: dict[str, str]  # lower-case names
    finished: float | None = None
    status: int | None = None
    # (perf_counter, text) for each streamed content chunk, as it was sent
    sent: list = field(default_factory=list)

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages") or []

    @property
    def system(self) -> str:
        return "\n".join(
            _content_text(m.get("content"))
            for m in self.messages
            if m.get("role") == "system"
        )

    @property
    def user(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""

    @property
    def text(self) -> str:
        return "\n".join(_content_text(m.get("content")) for m in self.messages)


Reply = str | list[str] | Callable[[Request], str]


@dataclass
class _Script:
    reply: Reply = "ok"
    latency: float = 0.0
    chunk_delay: float = 0.0
    status: int | None = None
    fail_first: int = 0
    fail_status: int = 429
    error_message: str | None = None
    no_usage: bool = False
    body: str | None = None
    content_type: str = "text/html"
    cut_first: int = 0
    echo_headers: bool = False
    headers: dict | None = None  # sent by llm's client, from extra-openai-models.yaml
    vision: bool = False  # llm sends it images
    supports_schema: bool = False  # llm sends it --schema as response_format
    supports_tools: bool = False  # llm sends it tools (-T)
    tool_calls: list | None = None  # [(name, arguments)] asked for before any tool result arrives
    model_name: str | None = None  # the name requests carry (the provider's), when not the model id
    stream_error: str | None = None  # how a streamed request hears of a failure (STREAM_ERRORS)
    n_ctx: int | None = None  # the context window, in tokens (words), as llama.cpp's --n_ctx
    server: str | None = None  # the emulated llama.cpp server process that serves it (_Host)
    calls: int = 0
    replies_given: int = 0


def arbiter_xml(
    synthesis: str = "The answer.",
    confidence: float = 0.9,
    analysis: str = "Analysis.",
    dissent: str = "",
    refinement_areas: tuple[str, ...] | list[str] = (),
    groups: str | list[list[str]] | None = None,
) -> str:
    """A well-formed arbiter reply.

    groups: the ``<groups>`` section, as lists of labels (``[["Response A",
    "Response B"], ["Response C"]]``, one line each) or as raw text; left
    out when None, as an arbiter that ignores it would."""
    areas = "".join(f"- {area}\n" for area in refinement_areas)
    if isinstance(groups, list):
        groups = "\n".join(", ".join(group) for group in groups)
    return (
        f"<analysis>{analysis}</analysis>\n"
        + (f"<groups>\n{groups}\n</groups>\n" if groups is not None else "")
        + f"<dissent>{dissent}</dissent>\n"
        f"<refinement_areas>\n{areas}</refinement_areas>\n"
        f"<confidence>{confidence}</confidence>\n"
        f"<synthesis>{synthesis}</synthesis>"
    )


def _stream_pieces(reply: str) -> list[str]:
    """Split into chunks of a few words, keeping whitespace: "".join(result) == reply.

    A long reply comes in at most ``MAX_CHUNKS`` chunks of more words each:
    its tokens are what is counted, and parsing thousands of chunks would
    only spend the client's CPU."""
    words = re.split(r"(?<=\s)(?=\S)", reply)
    size = max(WORDS_PER_CHUNK, -(-len(words) // MAX_CHUNKS))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


class _Host:
    """One emulated llama.cpp server process (llama-cpp-python's): it serves
    one request at a time, whatever the model; the others wait. With
    ``interrupt_requests`` (that server's default) a request that arrives
    ends the streamed request in flight at its next step, as an empty
    reply: the role chunk, then ``[DONE]``."""

    def __init__(self, interrupt_requests: bool):
        self.interrupt_requests = interrupt_requests
        self._condition = threading.Condition()
        self._waiting = 0
        self._current: threading.Event | None = None  # set: the request in flight must stop

    def enter(self, release: threading.Event) -> threading.Event | None:
        """Wait for this server's turn; the returned event is set when a
        request that arrived since wants the request in flight to end. None:
        released (``reset``) while waiting."""
        with self._condition:
            self._waiting += 1
            if self.interrupt_requests and self._current is not None:
                self._current.set()
            while self._current is not None and not release.is_set():
                self._condition.wait(0.05)
            self._waiting -= 1
            if release.is_set():
                return None
            self._current = stop = threading.Event()
            if self.interrupt_requests and self._waiting:
                stop.set()
            return stop

    def leave(self) -> None:
        with self._condition:
            self._current = None
            self._condition.notify_all()

    def stop(self) -> None:
        """End the request in flight (reset()/close(), once ``release`` is set)."""
        with self._condition:
            if self._current is not None:
                self._current.set()
            self._condition.notify_all()


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # listen backlog; the default 5 stalls bursts of connects
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, provider: "SimProvider", port: int = 0):
        self.provider = provider
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request, client_address):
        # Clients that hang up (cancelled calls) are normal here, not errors.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        try:
            self._handle_post()
        except ConnectionError:  # BrokenPipeError, ConnectionResetError, ...
            self.close_connection = True

    def _handle_post(self):
        provider = self.server.provider
        release = provider._release
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        request = Request(
            model=str(body.get("model", "")),
            body=body,
            stream=bool(body.get("stream")),
            started=started,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        provider._record(request)
        try:
            self._respond(provider, request, release)
        finally:
            if request.finished is None:  # hung up, or released before answering
                request.finished = time.perf_counter()

    def _respond(self, provider: "SimProvider", request: Request, release: threading.Event):
        if self.path != CHAT_PATH:
            return self._send_error(request, 404, f"Unknown path {self.path}")
        script = provider.script_for(request.model)
        if script is None:
            return self._send_error(
                request, 404, f"The model `{request.model}` does not exist", code="model_not_found"
            )
        with provider._lock:
            script.calls += 1
            call_number = script.calls
            host = provider._hosts.get(script.server)
        if host is None:
            return self._serve(provider, script, request, call_number, release, release)
        stop = host.enter(release)
        if stop is None:  # released by reset()/close() while waiting for its turn
            self.close_connection = True
            return
        try:
            # Only a stream is interrupted: llama-cpp-python checks between the chunks it sends.
            self._serve(provider, script, request, call_number, release, stop if request.stream else release)
        finally:
            host.leave()

    def _serve(self, provider: "SimProvider", script: _Script, request: Request, call_number: int,
               release: threading.Event, stop: threading.Event):
        """Answer one request; ``stop`` is set when it must end early: by
        reset()/close() (``release``: hang up) or by a request that
        interrupts it (an emulated llama.cpp server's)."""
        prompt_tokens = _count_tokens(request.text)
        if script.n_ctx is not None and prompt_tokens > script.n_ctx:
            # llama-cpp-python's message and code (a 400 unless streamed; see STREAM_ERRORS).
            message = (f"This model's maximum context length is {script.n_ctx} tokens. However, you requested "
                       f"{prompt_tokens} tokens ({prompt_tokens} in the messages, 0 in the completion). "
                       "Please reduce the length of the messages or completion.")
            return self._send_failure(request, 400, message, "context_length_exceeded",
                                      script.stream_error or "empty")
        if script.latency and stop.wait(script.latency):
            if release.is_set():  # released by reset()/close(): hang up without answering
                self.close_connection = True
                return
            return self._send_interrupted(request)
        message = script.error_message
        if script.echo_headers:  # as some providers do: the request's headers, keys included
            message = f"{message or 'Unauthorized'}: " + json.dumps(request.headers)
        if script.status is not None:
            return self._send_failure(request, script.status, message, None, script.stream_error)
        if call_number <= script.fail_first:
            return self._send_failure(request, script.fail_status, message, None, script.stream_error)
        if script.body is not None:
            return self._send_raw(request, script.body, script.content_type)
        if script.tool_calls and request.body.get("tools") and not any(
            m.get("role") == "tool" for m in request.messages
        ):
            return self._send_tool_calls(request, script.tool_calls)
        try:
            reply = provider._next_reply(script, request)
        except Exception as exc:  # a broken reply callable: surface it, do not retry
            return self._send_error(request, 400, f"reply callable raised {exc!r}")
        limit = request.body.get("max_tokens")
        if isinstance(limit, int) and _count_tokens(reply) > limit:  # as a provider stops at max_tokens
            reply = "".join(re.split(r"(?<=\s)(?=\S)", reply)[:limit])
        usage = None
        if not script.no_usage:
            completion_tokens = _count_tokens(reply)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        if request.stream:
            cut = call_number <= script.cut_first
            self._send_stream(request, reply, usage, script.chunk_delay, release, stop, cut)
        else:
            self._send_completion(request, reply, usage)

    def _send_json(self, request: Request, status: int, payload: dict):
        data = json.dumps(payload).encode()
        request.status = status
        self.send_response(status)
        if status == 429 or status >= 500:
            self.send_header("Retry-After-Ms", str(RETRY_AFTER_MS))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write_last(request, data)

    def _send_error(self, request: Request, status: int, message: str | None, code: str | None = None):
        self._send_json(request, status, {"error": _error(request, status, message, code)})

    def _send_failure(self, request: Request, status: int, message: str | None, code: str | None,
                      in_stream: str | None):
        """A failure: the HTTP status, or for a streamed request with
        ``in_stream`` (one of STREAM_ERRORS) a 200 stream that tells it so."""
        if not request.stream or in_stream is None:
            return self._send_error(request, status, message, code)
        self._start_events(request)
        error = _error(request, status, message, code)
        if in_stream == "error_line":
            self._write_last(request, b"error: " + json.dumps(error).encode() + b"\n\n")
        elif in_stream == "data":
            self._write_last(request, b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
        else:
            request.finished = time.perf_counter()

    def _send_interrupted(self, request: Request):
        """What llama-cpp-python's server sends a stream it interrupts before
        any text: the role chunk, then ``[DONE]``."""
        self._start_events(request)
        chunk = {"id": f"chatcmpl-sim-{id(request):x}", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": request.model,
                 "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
        self._send_event(chunk)
        self._write_last(request, b"data: [DONE]\n\n")

    def _start_events(self, request: Request, length: int | None = None):
        """A 200 event stream's headers; it ends when the connection closes.
        ``length``: a Content-Length to promise (more than is sent cuts the body)."""
        request.status = 200
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_completion(self, request: Request, reply: str, usage: dict | None):
        payload = {
            "id": f"chatcmpl-sim-{id(request):x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
        }
        if usage is not None:
            payload["usage"] = usage
        self._send_json(request, 200, payload)

    def _send_stream(
        self,
        request: Request,
        reply: str,
        usage: dict | None,
        chunk_delay: float,
        release: threading.Event,
        stop: threading.Event,
        cut: bool = False,
    ):
        # A cut reply promises more than is sent: the client sees the body cut short.
        self._start_events(request, 10**6 if cut else None)
        base = {
            "id": f"chatcmpl-sim-{id(request):x}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
        }
        pieces = _stream_pieces(reply)
        for index, piece in enumerate(pieces):
            if index and chunk_delay:
                stop.wait(chunk_delay)
            if stop.is_set():
                if release.is_set():  # reset()/close(): hang up
                    return
                self._write_last(request, b"data: [DONE]\n\n")  # interrupted: the reply so far
                return
            delta = {"content": piece}
            if index == 0:
                delta = {"role": "assistant", "content": piece}
            last = index == len(pieces) - 1
            choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
            request.sent.append((time.perf_counter(), piece))
            self._send_event({**base, "choices": [choice]})
            if cut and index + 1 >= max(1, len(pieces) // 2):
                request.finished = time.perf_counter()
                return  # hang up half-way through the reply
        if usage is not None:
            self._send_event({**base, "choices": [], "usage": usage})
        self._write_last(request, b"data: [DONE]\n\n")

    def _send_tool_calls(self, request: Request, tool_calls: list):
        """A reply asking for tool calls: one message, or streamed as llm's
        client reads them (each call's name first, then its arguments)."""
        calls = [
            {"index": i, "id": f"call_{i}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments)}}
            for i, (name, arguments) in enumerate(tool_calls)
        ]
        usage = {"prompt_tokens": _count_tokens(request.text), "completion_tokens": 0,
                 "total_tokens": _count_tokens(request.text)}
        base = {"id": f"chatcmpl-sim-{id(request):x}", "created": int(time.time()), "model": request.model}
        if not request.stream:
            message = {"role": "assistant", "content": None,
                       "tool_calls": [{k: v for k, v in c.items() if k != "index"} for c in calls]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return self._send_json(request, 200, {**base, "object": "chat.completion", "choices": [choice],
                                                  "usage": usage})
        self._start_events(request)
        base["object"] = "chat.completion.chunk"
        for call in calls:
            named = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            arguments = {"index": call["index"], "function": {"arguments": call["function"]["arguments"]}}
            for delta in ({"role": "assistant", "tool_calls": [named]}, {"tool_calls": [arguments]}):
                self._send_event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._send_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        self._send_event({**base, "choices": [], "usage": usage})
        self._write_last(request, b"data: [DONE]\n\n")

    def _send_raw(self, request: Request, body: str, content_type: str):
        """A 200 whose body is not what the API promises (an HTML error page, say)."""
        data = body.encode("utf-8", "surrogatepass")
        request.status = 200
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write_last(request, data)

    def _write_last(self, request: Request, data: bytes):
        # Stamp first: the client may return before this thread runs again.
        request.finished = time.perf_counter()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_event(self, payload: dict):
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def _error(request: Request, status: int, message: str | None, code: str | None) -> dict:
    """An OpenAI-style error object."""
    message = message or f"Simulated HTTP {status} from model {request.model!r}"
    error_type = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"message": message, "type": error_type, "code": code or error_type}


class SimProvider:
    """An OpenAI-compatible chat server on 127.0.0.1 with scripted models."""

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self._models: dict[str, _Script] = {}
        self._hosts: dict[str, _Host] = {}  # emulated llama.cpp servers, by name
        self._release = threading.Event()
        self.requests: list[Request] = []
        self._server = _Server(self, port)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="simulator", daemon=True
        )
        self._thread.start()

    def add(
        self,
        name: str,
        *,
        reply: Reply = "ok",
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        status: int | None = None,
        fail_first: int = 0,
        fail_status: int = 429,
        error_message: str | None = None,
        no_usage: bool = False,
        body: str | None = None,
        content_type: str = "text/html",
        cut_first: int = 0,
        echo_headers: bool = False,
        headers: dict | None = None,
        vision: bool = False,
        supports_schema: bool = False,
        supports_tools: bool = False,
        tool_calls: list | None = None,
        model_name: str | None = None,
        stream_error: str | None = None,
        n_ctx: int | None = None,
        server: str | None = None,
        interrupt_requests: bool = False,
    ) -> None:
        """Register (or replace) a scripted model and rewrite extra-openai-models.yaml.

        reply: a str; a list of str consumed one per successful call (the last
        repeats); or a callable taking the Request and returning a str.
        latency: seconds before the response headers (applies to every call,
        errors included). chunk_delay: seconds between streamed chunks.
        status: every call fails with this HTTP status. fail_first: the first
        N calls fail with fail_status. no_usage: omit "usage". body: answer
        every call with this raw 200 body of content_type instead of JSON.
        cut_first: the first N streamed replies hang up half-way. echo_headers:
        error messages repeat the request's headers (API keys included).
        headers: listed under the model's ``headers:`` in the YAML.
        vision, supports_schema, supports_tools: declared in the YAML, so llm
        sends it images, schemas and tools.
        tool_calls: [(name, arguments dict)]: while the request offers tools
        and holds no ``role: tool`` message, the reply asks for these calls
        (``finish_reason: "tool_calls"``, streamed or not) instead of ``reply``;
        once llm sends the tools' results back, ``reply`` answers.
        model_name: the YAML's ``model_name`` (the name the provider knows,
        which requests carry), when it differs from ``name``.

        As llama.cpp's servers do (measured against llama-cpp-python's server
        and older builds of llama.cpp's own):
        stream_error: how a streamed request hears of a failure (``status``,
        ``fail_first``, ``n_ctx``) instead of the HTTP status: "empty" (a 200
        stream with no event), "error_line" (an ``error: {...}`` line in a 200
        stream, which the OpenAI client skips) or "data" (a ``data: {"error":
        ...}`` event, which it raises); a request not streamed gets the status.
        n_ctx: a request of more tokens (words) than this overflows the
        context: HTTP 400 ``context_length_exceeded`` with llama-cpp-python's
        message, or a 200 empty stream when streamed (``stream_error``, by
        default "empty").
        server: the name of an emulated llama.cpp server process; the models
        given one name share it: it serves one request at a time.
        interrupt_requests: that server's setting (llama-cpp-python's default
        is on): a request that arrives ends the streamed request in flight
        at once, as an empty reply (the role chunk, then ``[DONE]``).
        """
        self.register(
            name,
            reply=reply,
            latency=latency,
            chunk_delay=chunk_delay,
            status=status,
            fail_first=fail_first,
            fail_status=fail_status,
            error_message=error_message,
            no_usage=no_usage,
            body=body,
            content_type=content_type,
            cut_first=cut_first,
            echo_headers=echo_headers,
            headers=headers,
            vision=vision,
            supports_schema=supports_schema,
            supports_tools=supports_tools,
            tool_calls=tool_calls,
            model_name=model_name,
            stream_error=stream_error,
            n_ctx=n_ctx,
            server=server,
            interrupt_requests=interrupt_requests,
        )
        self.write_yaml()

    def add_many(self, names, **kw) -> None:
        for name in names:
            self.register(name, **kw)
        self.write_yaml()

    def register(self, name: str, **kw) -> None:
        """Register (or replace) a scripted model, as ``add`` does, without
        writing any file: ``yaml_text`` gives its entry."""
        if isinstance(kw.get("reply"), list):
            kw["reply"] = list(kw["reply"])
            if not kw["reply"]:
                raise ValueError("reply list must not be empty")
        if kw.get("stream_error") not in (None, *STREAM_ERRORS):
            raise ValueError(f"stream_error must be one of {', '.join(STREAM_ERRORS)}")
        interrupt_requests = kw.pop("interrupt_requests", False)
        with self._lock:
            self._models[name] = _Script(**kw)
            if kw.get("server") is not None:
                host = self._hosts.setdefault(kw["server"], _Host(interrupt_requests))
                host.interrupt_requests = interrupt_requests  # the server's setting: the last given

    def write_yaml(self) -> None:
        """List every added model in extra-openai-models.yaml in llm's current user dir."""
        (llm.user_dir() / "extra-openai-models.yaml").write_text(self.yaml_text())

    def yaml_text(self) -> str:
        """The extra-openai-models.yaml entries of every model registered here."""
        with self._lock:
            scripts = dict(self._models)
        lines = []
        for name, script in scripts.items():
            quoted = json.dumps(name)  # a JSON string is a valid YAML scalar
            lines += [
                f"- model_id: {quoted}",
                f"  model_name: {json.dumps(script.model_name or name)}",
                f"  api_base: {json.dumps(self.base_url)}",
            ]
            if script.headers:
                lines.append(f"  headers: {json.dumps(script.headers)}")
            if script.vision:
                lines.append("  vision: true")
            if script.supports_schema:
                lines.append("  supports_schema: true")
            if script.supports_tools:
                lines.append("  supports_tools: true")
        return ("\n".join(lines) + "\n") if lines else "[]\n"

    def script_for(self, requested: str) -> "_Script | None":
        """The script a request for ``requested`` (a model_name) is answered by."""
        with self._lock:
            for name, script in self._models.items():
                if (script.model_name or name) == requested:
                    return script
        return None

    def calls(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.model == name]

    def reset(self) -> None:
        """Forget models and requests; free requests still waiting out a latency."""
        with self._lock:
            self._models.clear()
            self.requests = []
            released, self._release = self._release, threading.Event()
            hosts, self._hosts = self._hosts, {}
        released.set()
        for host in hosts.values():
            host.stop()

    def close(self) -> None:
        self._release.set()
        for host in self._hosts.values():
            host.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self, script: _Script, request: Request) -> str:
        reply = script.reply
        if callable(reply):
            return str(reply(request))
        if isinstance(reply, list):
            with self._lock:
                index = min(script.replies_given, len(reply) - 1)
                script.replies_given += 1
            return reply[index]
        return reply


DEMO_QUESTION = "How many r's are in strawberry?"
DEMO_MEMBERS = {
    "demo-a": "There are three r's in strawberry.",
    "demo-b": "Strawberry has 3 r's: one in 'str' and two in 'berry'.",
    "demo-c": "I count three: st-r-awbe-r-r-y.",
}
DEMO_JUDGE = "demo-judge"


def register_demo(provider: SimProvider, question: str = DEMO_QUESTION) -> None:
    """The demo panel (``DEMO_MEMBERS`` and ``DEMO_JUDGE``) on ``provider``,
    registered without writing any file. Its replies are scripted for
    ``DEMO_QUESTION``; asked anything else, the members say they are
    scripted and the judge says so, rather than pretend to an answer.
    They take a second or so, as models do, streamed a few words at a time,
    so that the live progress has something to show."""
    pace = {name: {"latency": 0.3 + 0.3 * i, "chunk_delay": 0.05} for i, name in enumerate(DEMO_MEMBERS)}
    pace[DEMO_JUDGE] = {"latency": 0.3, "chunk_delay": 0.02}
    if question == DEMO_QUESTION:
        for name, answer in DEMO_MEMBERS.items():
            provider.register(name, reply=answer, **pace[name])
        provider.register(DEMO_JUDGE, **pace[DEMO_JUDGE], reply=arbiter_xml(
            "There are three r's in strawberry.", 0.92,
            analysis="All three members count three r's, in different words.", dissent="None.",
            groups=[["Response A", "Response B", "Response C"]],
        ))
        return
    for name in DEMO_MEMBERS:
        provider.register(name, **pace[name], reply=f"I am {name}, a scripted model of the simulator: I cannot "
                                                    "read the question, so I cannot answer it.")
    provider.register(DEMO_JUDGE, **pace[DEMO_JUDGE], reply=arbiter_xml(
        "The simulated panel cannot answer this question: its members are scripted and did not read it. "
        f"It answers only {DEMO_QUESTION!r}: ask yours with --local (a small real model, offline) or real models.",
        0.9,
        analysis="All three members say they are scripted and cannot read the question.", dissent="None.",
        groups=[["Response A", "Response B", "Response C"]],
    ))


def main(argv: list[str] | None = None) -> int:
    """``python -m llm_consortium.evaluation.simulator [--port N]``: a demo panel
    without a provider key or a local model server. Prints the entries to
    paste into extra-openai-models.yaml and a command to try, then serves
    until Ctrl-C. It writes nothing into llm's user directory."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m llm_consortium.evaluation.simulator",
        description="A simulated OpenAI-compatible provider on 127.0.0.1 serving a demo consortium panel: "
                    "scripted members and a judge, no key needed.",
    )
    parser.add_argument("--port", type=int, default=8002, help="port to listen on (0: any free one; default 8002)")
    port = parser.parse_args(argv).port
    try:
        provider = SimProvider(port)
    except OSError as exc:
        parser.exit(1, f"Error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}\n")
    register_demo(provider)
    members = " ".join(f"-m {name}" for name in DEMO_MEMBERS)
    print(f"Simulated provider at {provider.base_url}: scripted models, which answer the same whatever they "
          "are asked.\n\n"
          "Paste into extra-openai-models.yaml in llm's user directory (dirname \"$(llm logs path)\"):\n\n"
          f"{provider.yaml_text()}\n"
          "Then, while this runs, try:\n\n"
          f"llm consortium \"{DEMO_QUESTION}\" {members} --arbiter {DEMO_JUDGE}\n\n"
          "Ctrl-C stops it.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        provider.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
