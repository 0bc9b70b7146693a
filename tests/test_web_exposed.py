"""The viewer over HTTP, without a browser: every run reachable (paging,
search, gzip) and safe when exposed (a body cap, an access token beyond
loopback, limits on asks, bidirectional controls shown, not applied).

The viewer is the real uvicorn server in this process on a free port (or
``llm consortium serve`` in a process of its own), and the runs are made
by llm's real client against the simulated provider.
"""

import gzip
import http.client
import re
import resource
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlencode

import pytest

from helpers import invoke, llm_process
from llm_consortium import ConsortiumOrchestrator, RunRecorder
from llm_consortium.evaluation.simulator import arbiter_xml
from llm_consortium.faces.web.app import MAX_BODY, listen, server
from llm_consortium.faces.web.asks import MAX_ASKS
from llm_consortium.storage import store

FAST = {"retry_backoff": 0.01}


@contextmanager
def serving(host="127.0.0.1", token=None):
    """The viewer on a free port of ``host``: yields its port."""
    sock = listen(host, 0)
    running = server(sock, host, token)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        running.should_exit = True
        thread.join(10)


def get(port, path, headers=None, source="127.0.0.1"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def record(prompt="What is the capital of France?", name=None):
    orchestrator = ConsortiumOrchestrator(models=["m1"], arbiter="judge", observers=[RunRecorder(name)], **FAST)
    return orchestrator.orchestrate_sync(prompt)["metadata"]["run_id"]


def csrf_of(port, source="127.0.0.1"):
    _, body = get(port, "/ask", source=source)
    return re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()


def post_ask(port, fields, source="127.0.0.1"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    connection.request("POST", "/ask", body=urlencode(fields),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body.decode()


# Every run reachable


def test_runs_list_pages_through_every_run_with_a_count_and_keeps_filters(sim):
    sim.add("m1", reply="Paris")
    sim.add("judge", reply=arbiter_xml("Paris", 0.9))
    ids = [record(f"Question {i}: the capital of France?") for i in range(53)]
    record("Something else entirely")
    with serving() as port:
        _, first = get(port, "/")
        assert b"Runs 1\xe2\x80\x9350 of 54" in first
        assert first.count(b"<tr data-run=") == 50
        assert b'href="/?page=2"' in first and b"Page 1 of 2" in first
        _, second = get(port, "/?page=2")
        assert second.count(b"<tr data-run=") == 4 and b"Runs 51\xe2\x80\x9354 of 54" in second
        assert ids[0].encode() in second  # the oldest run is on the last page
        # A search reaches every run, not only the newest page's; the pager keeps it.
        _, searched = get(port, "/?q=capital+of+FRANCE")
        assert b"Runs 1\xe2\x80\x9350 of 53 matching the filters" in searched
        assert b'href="/?q=capital+of+FRANCE&amp;page=2"' in searched
        _, last = get(port, "/?q=capital+of+FRANCE&page=2")
        assert last.count(b"<tr data-run=") == 3 and b"Something else" not in last
        response, beyond = get(port, "/?page=9")
        assert response.status == 200 and b"There are 54 runs, on 2 pages" in beyond


def test_pages_are_gzipped_and_the_event_stream_is_not(sim):
    sim.add("m1", reply="Paris " * 200)
    sim.add("judge", reply=arbiter_xml("Paris " * 200, 0.9))
    run_id = record()
    with serving() as port:
        response, body = get(port, f"/runs/{run_id}", {"Accept-Encoding": "gzip"})
        assert response.getheader("Content-Encoding") == "gzip"
        assert b"Paris" in gzip.decompress(body)
        response, body = get(port, f"/runs/{run_id}/events", {"Accept-Encoding": "gzip"})
        assert response.getheader("Content-Encoding") is None and body.startswith(b"event: update")


# Safe when exposed


def rss_kb():
    """This process's resident memory now, in KB (the server runs in it)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def test_a_large_body_is_refused_before_it_is_read_chunked_or_not(sim):
    with serving() as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/ask")
        connection.putheader("Content-Type", "application/x-www-form-urlencoded")
        connection.putheader("Content-Length", str(50 * 1024 * 1024))
        connection.endheaders()  # nothing of the 50 MB is sent: the answer comes from the headers
        response = connection.getresponse()
        assert response.status == 413 and b"at most 64 KB" in response.read()
        connection.close()

        before = rss_kb()
        for _ in range(2):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            chunk = b"prompt=" + b"A" * (1024 * 1024)

            def body():
                for _ in range(50):  # 50 MB, chunked: no length to check first
                    yield chunk

            try:
                connection.request("POST", "/ask", body=body(), encode_chunked=True,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
            except (BrokenPipeError, ConnectionResetError):  # the server stopped reading, as it should
                pass
            response = connection.getresponse()
            assert response.status == 413
            connection.close()
        # No 50 MB body was held (reading them whole grew this process by about 150 MB).
        assert rss_kb() - before < 20 * 1024
    assert MAX_BODY == 64 * 1024


def test_beyond_loopback_every_request_needs_the_token_which_a_cookie_keeps(sim):
    sim.add("m1", reply="Paris")
    sim.add("judge", reply=arbiter_xml("Paris", 0.9))
    run_id = record()
    with serving("0.0.0.0", token="s3cret-token") as port:
        for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/events", "/static/viewer.css", "/ask"):
            response, body = get(port, path)
            assert response.status == 401 and b"access token" in body, path
            response, _ = get(port, path, {"Cookie": "consortium_token=wrong"})
            assert response.status == 401, path
        for wrong in ("wrong", "%C3%A9t%C3%A9", "%F0%9F%94%91"):  # not ASCII either: refused, never a 500
            response, _ = get(port, f"/?token={wrong}")
            assert response.status == 401, wrong
        response, _ = get(port, "/", {"Cookie": "consortium_token=\u00e9"})
        assert response.status == 401
        response, _ = get(port, f"/runs/{run_id}?token=s3cret-token")
        assert response.status == 303 and response.getheader("Location") == f"/runs/{run_id}"
        cookie = response.getheader("Set-Cookie")
        assert "consortium_token=s3cret-token" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        for path in ("/", f"/runs/{run_id}", "/static/viewer.css"):
            response, _ = get(port, path, {"Cookie": "consortium_token=s3cret-token"})
            assert response.status == 200, path
        # The machine's own name is a Host it answers to on every interface.
        response, _ = get(port, "/", {"Cookie": "consortium_token=s3cret-token", "Host": socket.gethostname()})
        assert response.status == 200


def test_loopback_needs_no_token():
    with serving() as port:
        response, _ = get(port, "/")
    assert response.status == 200


@pytest.mark.slow
def test_serve_beyond_loopback_warns_and_prints_the_real_address_with_a_new_token(sim):
    process = llm_process("consortium", "serve", "--host", "0.0.0.0", "--port", "0",
                          stderr=__import__("subprocess").PIPE, text=True)
    try:
        lines = [process.stderr.readline(), process.stderr.readline()]
    finally:
        process.terminate()
        process.wait(10)
    warning, viewing = lines
    assert warning.startswith("Warning: listening on 0.0.0.0") and "spending your keys" in warning
    address = re.search(r"at (http://\S+)", viewing).group(1)
    assert "127.0.0.1" not in address and re.search(r"\?token=[\w-]{20,}$", address)
    assert "--token" in invoke("consortium", "serve", "--help").output


def test_asks_are_limited_per_client_and_in_all(sim):
    sim.add("slow", reply="Paris", latency=3)
    sim.add("judge", reply=arbiter_xml("Paris", 0.9))
    store.save_config("team", {"models": ["slow"], "arbiter": "judge", **FAST})
    with serving("0.0.0.0") as port:
        response, _ = post_ask(port, {"csrf": csrf_of(port), "consortium": "team", "prompt": "Capital?"})
        assert response.status == 303
        response, page = post_ask(port, {"csrf": csrf_of(port), "consortium": "team", "prompt": "Again?"})
        assert response.status == 429 and "Your last question is still running" in page
        sources = [f"127.0.0.{i}" for i in range(2, 2 + MAX_ASKS)]
        statuses = [post_ask(port, {"csrf": csrf_of(port, s), "consortium": "team", "prompt": "Q?"}, s)[0].status
                    for s in sources]
        assert statuses == [303] * (MAX_ASKS - 1) + [429]
        # The asks run on in the server's threads: let them end here, not in the next test.
        deadline = time.monotonic() + 60
        while any(run.status == "running" for run in store.list_runs(None)) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(sim.calls("slow")) == MAX_ASKS
    assert [run.status for run in store.list_runs(None)] == ["success"] * MAX_ASKS


def test_a_csrf_value_that_is_not_ascii_is_refused_not_an_error(sim):
    with serving() as port:
        response, page = post_ask(port, {"csrf": "\u00e9t\u00e9", "consortium": "x", "prompt": "q"})
    assert response.status == 403 and "did not come from this viewer's page" in page


def test_an_ask_keeps_the_budget_rule_of_every_run(sim):
    sim.add("m1", reply="Paris")
    sim.add("judge", reply=arbiter_xml("Paris", 0.9))
    store.save_config("capped", {"models": ["m1"], "arbiter": "judge", "max_cost": 0.01, **FAST})
    with serving() as port:
        response, page = post_ask(port, {"csrf": csrf_of(port), "consortium": "capped", "prompt": "Capital?"})
    assert response.status == 400 and "--max-cost needs the price of every model" in page
    assert sim.requests == []


TROJAN = "Access granted\u202e\u2066 // if (isAdmin)\u2069\u2066 only admins"


def test_bidi_controls_are_shown_not_applied_in_the_page_and_the_terminal(sim):
    sim.add("m1", reply=TROJAN)
    sim.add("judge", reply=arbiter_xml(TROJAN, 0.9))
    run_id = record()
    with serving() as port:
        _, page = get(port, f"/runs/{run_id}")
    page = page.decode()
    assert "[U+202E][U+2066] // if (isAdmin)[U+2069][U+2066]" in page
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", page)
    shown = invoke("consortium", "inspect", run_id, terminal="stdout,stderr").output
    assert "Access granted[U+202E]" in shown and not re.search("[\u202a-\u202e\u2066-\u2069]", shown)
    # The record keeps every character: only what is shown changes.
    assert store.load_run(run_id).synthesis.synthesis == TROJAN
