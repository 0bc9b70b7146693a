"""The viewer's web app (starlette, served by uvicorn).

Safe by default: it listens on 127.0.0.1; a request whose Host header is
neither an IP address, ``localhost`` nor the ``--host`` given is refused
(a DNS-rebinding page cannot reach it); every POST carries the server's
CSRF token (and a cross-origin one is refused); a request body over
``MAX_BODY`` is refused before it is read; model text is escaped and
Markdown sanitised (see ``html``); the Content-Security-Policy lets the page
load only its own script, styles and images, which ship in the package.

Listening beyond loopback (``--host``), it asks every request for the
server's access token (``Guard``): the address ``serve`` prints carries it
once (``?token=``), and it is then kept in an HttpOnly, SameSite=Strict
cookie. Asks are limited to one running per client address and
``MAX_ASKS`` in all (``asks``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL, Headers, QueryParams
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...storage import store
from . import pages
from .asks import AskError, Asks

STATIC = Path(__file__).parent / "static"
PER_PAGE = 50  # runs on a page of the runs list
POLL_SECONDS = 0.4  # how often a live page's stream looks at logs.db
LOGGED_SECONDS = 3.0  # how long an ended run's stream waits for llm to log its answer (llm -m logs it after)
START_SECONDS = 60  # how long an ask waits for its run to start (models resolved, keys checked)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
WILDCARDS = ("", "0.0.0.0", "::")
MAX_BODY = 64 * 1024  # the most a request may send (the ask form: a prompt); more is refused, unread
TOKEN_COOKIE = "consortium_token"


class TooLarge(Exception):
    """A request body over ``MAX_BODY``."""


def create_app(host: str = "127.0.0.1", token: str | None = None):
    """The app; ``host``: the name or address it listens on, accepted in Host
    headers; ``token``: the access token every request must carry, if any."""
    csrf = secrets.token_urlsafe(32)
    asks = Asks()

    async def runs(request: Request):
        params = request.query_params
        filters = {key: params.get(key, "").strip() for key in ("q", "consortium", "method", "status")}
        number = int(params["page"]) if params.get("page", "").isdigit() and int(params["page"]) > 0 else 1
        chosen = dict(prompt=filters["q"] or None, name=filters["consortium"] or None,
                      method=filters["method"] or None, status=filters["status"] or None)

        def read():
            return (store.list_runs(PER_PAGE, offset=(number - 1) * PER_PAGE, **chosen),
                    store.count_runs(**chosen), store.run_facets())

        found, total, facets = await run_in_threadpool(read)
        return page(pages.runs_page(found, facets, filters, pages.Paging(number, PER_PAGE, total)))

    async def run(request: Request):
        record = await find(request)
        if isinstance(record, Response):
            return record
        conversation, configs = await run_in_threadpool(lambda: (store.llm_conversation(record.run_id), saved()))
        return page(pages.run_page(record, conversation, configs, csrf))

    async def events(request: Request):
        """Server-sent events: the run's page body each time it changes, then
        ``end`` once it has ended and its answer is in llm's log (for a run
        asked here; from another process, at most ``LOGGED_SECONDS`` later:
        a run llm does not log has no conversation to show)."""
        record = await find(request)
        if isinstance(record, Response):
            return record
        run_id = record.run_id

        async def stream():
            seen, ended_at = None, None
            while not await request.is_disconnected():
                record = await run_in_threadpool(store.load_run, run_id)
                if record is None:  # deleted meanwhile
                    yield "event: end\ndata: {}\n\n"
                    return
                ended = record.outcome.status in pages.FINISHED and not asks.busy(run_id)
                conversation, configs = await run_in_threadpool(
                    lambda: (store.llm_conversation(run_id), saved()))
                state = json.dumps([record.model_dump(), conversation, configs], default=str)
                if state != seen:  # what the record holds changed (not merely the clock)
                    body = pages.run_body(record, conversation, configs, csrf)
                    yield f"event: update\ndata: {json.dumps({'html': body, 'status': record.outcome.status})}\n\n"
                    seen = state
                ended_at = (ended_at or asyncio.get_running_loop().time()) if ended else None
                if ended and (conversation or asyncio.get_running_loop().time() - ended_at >= LOGGED_SECONDS):
                    yield "event: end\ndata: {}\n\n"
                    return
                await asyncio.sleep(POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def ask_form(request: Request):
        return page(pages.ask_page(await run_in_threadpool(saved), csrf,
                                   chosen=request.query_params.get("consortium")))

    async def ask(request: Request):
        try:
            form = await posted(request)
        except TooLarge:
            return too_large()
        if not same_secret(form.get("csrf", ""), csrf) or cross_origin(request):
            return PlainTextResponse("Refused: this form did not come from this viewer's page", status_code=403)
        name, prompt, after = form.get("consortium", ""), form.get("prompt", ""), form.get("after") or None
        client = request.client.host if request.client else ""
        try:
            started = await run_in_threadpool(asks.start, name, prompt, after, client)
            run_id = await asyncio.wait_for(asyncio.wrap_future(started), START_SECONDS)
        except (AskError, asyncio.TimeoutError) as exc:
            message = str(exc) or "The run did not start in time"
            return page(pages.ask_page(await run_in_threadpool(saved), csrf, chosen=name, prompt=prompt,
                                       error=message), status_code=getattr(exc, "status", 400))
        await run_in_threadpool(store.wait_recorded, run_id)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def not_found(request: Request, exc):
        return page(pages.error_page("Not found", f"Nothing is at {request.url.path}"), status_code=404)

    app = Starlette(exception_handlers={404: not_found}, routes=[
        Route("/", runs),
        Route("/runs/{run_id}", run),
        Route("/runs/{run_id}/events", events),
        Route("/ask", ask_form, methods=["GET"]),
        Route("/ask", ask, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
    return Guard(app, host, token)


async def find(request: Request):
    """The run the path names (id or unique prefix), or the page saying why not."""
    key = request.path_params["run_id"]
    try:
        record = await run_in_threadpool(store.load_run, key)
    except store.AmbiguousRunId:
        return page(pages.error_page("Ambiguous run id", f"{key!r} matches several runs: give more of the id"),
                    status_code=404)
    if record is None:
        return page(pages.error_page("No such run", f"No run matches {key!r}"), status_code=404)
    return record


async def posted(request: Request) -> dict[str, str]:
    """A form the page posted (URL-encoded, as its forms send them): the
    first value of each field. ``TooLarge`` as soon as the body passes
    ``MAX_BODY`` (a chunked body has no length to check first)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace"),
                                                       keep_blank_values=True).items()}


def same_secret(given: str, secret: str) -> bool:
    """Whether ``given`` is ``secret``, in constant time; any text may be
    given (``compare_digest`` refuses strings that are not ASCII)."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode())


def too_large() -> Response:
    return PlainTextResponse(f"Refused: a request body may be at most {MAX_BODY // 1024} KB", status_code=413,
                             headers={"Connection": "close"})


def saved() -> list[str]:
    """Saved consortia that can be asked (not the unsaved settings' ``consortium-last``)."""
    return [name for name, config, _ in store.list_configs() if not config.get("ad_hoc")]


def page(markup: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(markup, status_code=status_code)


def cross_origin(request: Request) -> bool:
    """Whether the browser says the request came from another site's page."""
    origin = request.headers.get("origin")
    return bool(origin) and origin != "null" and urlsplit(origin).netloc != request.headers.get("host")


def loopback(host: str) -> bool:
    """Whether ``host`` (as ``--host`` takes it) is reachable from this machine alone."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def machine_names() -> set[str]:
    """This machine's own names, by which others reach a server on every interface."""
    name = socket.gethostname().lower()
    return {name, socket.getfqdn(name).lower()}


def allowed_host(header: str, host: str) -> bool:
    """Whether a Host header names this server: an IP address (which a
    rebinding attacker's page cannot send: its Host is the attacker's
    name), ``localhost``, the name the server was started on, or on every
    interface, the machine's own name."""
    name = urlsplit(f"//{header}").hostname or ""
    if name == "localhost" or (host not in WILDCARDS and name == host.lower().strip("[]")):
        return True
    if host in WILDCARDS and name in machine_names():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """Around the app: refuses foreign Host headers, bodies declared over
    ``MAX_BODY``, and (with a token) requests without the token; compresses
    every response but the event stream; adds the security headers."""

    def __init__(self, app, host: str, token: str | None = None):
        self.app, self.compressed, self.host, self.token = app, GZipMiddleware(app), host, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in HEADERS.items())]
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, with_headers)
        live = scope["path"].endswith("/events")  # a stream of events, sent as they happen: never buffered
        await (self.app if live else self.compressed)(scope, receive, with_headers)

    def refusal(self, scope) -> Response | None:
        """The response refusing this request, or None to let it through."""
        headers = Headers(scope=scope)
        if not allowed_host(headers.get("host", ""), self.host):
            return PlainTextResponse("Refused: unknown Host header", status_code=400)
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return too_large()
        if self.token is None or same_secret(self.cookie(headers), self.token):
            return None
        url = URL(scope=scope)
        if same_secret(QueryParams(url.query).get("token", ""), self.token):
            # The token arrived in the address serve printed: kept in a cookie
            # from now on, and taken out of the address (and the history).
            rest = url.remove_query_params("token")
            response = RedirectResponse(rest.path + (f"?{rest.query}" if rest.query else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return response
        return PlainTextResponse("This viewer needs its access token: open the address that "
                                 "'llm consortium serve' printed (it ends in ?token=...)", status_code=401)

    @staticmethod
    def cookie(headers: Headers) -> str:
        from http.cookies import CookieError, SimpleCookie

        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except CookieError:
            return ""
        morsel = cookies.get(TOKEN_COOKIE)
        return morsel.value if morsel else ""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` (0: any free port); OSError if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def server(sock: socket.socket, host: str, token: str | None = None):
    """A uvicorn server of the app on ``sock``; ``.run(sockets=[sock])`` serves until Ctrl-C."""
    import uvicorn

    config = uvicorn.Config(create_app(host, token), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    return uvicorn.Server(config)
