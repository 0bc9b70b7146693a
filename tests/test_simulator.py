"""The simulated provider, driven through llm's real OpenAI client."""

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import llm
import pytest

from helpers import invoke, read_until_closed
from llm_consortium.evaluation.simulator import arbiter_xml

LONG_REPLY = "  The quick  brown fox\njumps over\tthe lazy dog.  "


def test_yaml_written_in_tmp_user_dir(sim, tmp_path):
    sim.add("sim-a")
    sim.add_many(["sim-b", "sim-c"], reply="x")
    path = llm.user_dir() / "extra-openai-models.yaml"
    assert path.parent == tmp_path / "llm-user"
    text = path.read_text()
    for name in ("sim-a", "sim-b", "sim-c"):
        assert f'model_id: "{name}"' in text
    assert text.count(f'api_base: "{sim.base_url}"') == 3
    assert {"sim-a", "sim-b", "sim-c"} <= {m.model_id for m in llm.get_models()}


def test_non_streaming_reply_and_usage(sim):
    sim.add("sim-a", reply=LONG_REPLY)
    response = llm.get_model("sim-a").prompt("one two three", stream=False)
    assert response.text() == LONG_REPLY
    assert response.usage().input == 3
    assert response.usage().output == 9
    [request] = sim.calls("sim-a")
    assert not request.stream
    assert request.status == 200
    assert request.started <= request.finished


def test_streaming_reply_and_usage(sim):
    sim.add("sim-a", reply=LONG_REPLY)
    response = llm.get_model("sim-a").prompt("one two")
    chunks = list(response)
    assert "".join(chunks) == LONG_REPLY
    assert len(chunks) > 1
    assert response.usage().input == 2
    assert response.usage().output == 9
    [request] = sim.calls("sim-a")
    assert request.stream
    assert request.body["stream_options"] == {"include_usage": True}


def test_empty_reply(sim):
    sim.add("sim-a", reply="")
    model = llm.get_model("sim-a")
    assert model.prompt("hi", stream=False).text() == ""
    assert "".join(model.prompt("hi")) == ""


def test_async_reply_and_usage(sim):
    sim.add("sim-a", reply="async answer")

    async def run():
        response = llm.get_async_model("sim-a").prompt("hi")
        return await response.text(), await response.usage()

    text, usage = asyncio.run(run())
    assert text == "async answer"
    assert (usage.input, usage.output) == (1, 2)


def test_list_replies_advance_and_last_repeats(sim):
    sim.add("sim-a", reply=["first", "second"])
    model = llm.get_model("sim-a")
    texts = [model.prompt("hi", stream=False).text() for _ in range(3)]
    assert texts == ["first", "second", "second"]


def test_callable_reply_sees_messages(sim):
    sim.add("sim-a", reply=lambda r: f"{r.system}|{r.user}|{len(r.messages)}")
    text = llm.get_model("sim-a").prompt("question", system="be brief", stream=False).text()
    assert text == "be brief|question|2"


def test_failing_reply_callable_is_a_400(sim):
    sim.add("sim-a", reply=lambda r: 1 / 0)
    with pytest.raises(Exception, match="ZeroDivisionError"):
        llm.get_model("sim-a").prompt("hi", stream=False).text()
    assert [r.status for r in sim.calls("sim-a")] == [400]


def test_requests_recorded(sim):
    sim.add("sim-a")
    sim.add("sim-b")
    llm.get_model("sim-a").prompt("hello a", system="sys a", stream=False).text()
    "".join(llm.get_model("sim-b").prompt("hello b"))
    first, second = sim.requests
    assert (first.model, first.stream, first.system, first.user) == ("sim-a", False, "sys a", "hello a")
    assert (second.model, second.stream, second.system, second.user) == ("sim-b", True, "", "hello b")
    assert first.text == "sys a\nhello a"
    assert sim.calls("sim-b") == [second]


def test_list_content_parts_are_read(sim):
    sim.add("sim-a", reply=lambda r: r.user)
    parts = [{"type": "text", "text": "part one "}, {"type": "text", "text": "part two"}]
    model = llm.get_model("sim-a")
    client = model.get_client(None)
    completion = client.chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": parts}]
    )
    assert completion.choices[0].message.content == "part one part two"


def test_no_real_key_is_sent(sim):
    sim.add("sim-a")
    llm.get_model("sim-a").prompt("hi", stream=False).text()
    [request] = sim.calls("sim-a")
    assert request.headers["authorization"] == "Bearer DUMMY_KEY"


def test_latency_is_honoured(sim):
    sim.add("sim-a", latency=0.3)
    start = time.perf_counter()
    llm.get_model("sim-a").prompt("hi", stream=False).text()
    assert time.perf_counter() - start >= 0.3


def test_chunk_delay_is_honoured(sim):
    sim.add("sim-a", reply="a b c d e f g", chunk_delay=0.1)  # three chunks
    start = time.perf_counter()
    assert "".join(llm.get_model("sim-a").prompt("hi")) == "a b c d e f g"
    assert time.perf_counter() - start >= 0.2


def test_concurrent_async_calls_overlap(sim):
    names = [f"sim-{i}" for i in range(20)]
    sim.add_many(names, reply="done", latency=0.5)
    models = [llm.get_async_model(name) for name in names]

    async def run():
        return await asyncio.gather(*(model.prompt("hi").text() for model in models))

    assert asyncio.run(run()) == ["done"] * 20
    # All 20 were in flight at once.
    assert max(r.started for r in sim.requests) < min(r.finished for r in sim.requests)


def test_status_401_raises(sim):
    sim.add("sim-a", status=401, error_message="bad key")
    with pytest.raises(Exception) as info:
        llm.get_model("sim-a").prompt("hi", stream=False).text()
    assert "bad key" in str(info.value)
    assert [r.status for r in sim.calls("sim-a")] == [401]


def test_unknown_model_is_404(sim):
    sim.add("sim-a")
    client = llm.get_model("sim-a").get_client(None)
    with pytest.raises(Exception, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert [r.status for r in sim.calls("nope")] == [404]


def test_fail_first_429_then_succeeds(sim):
    sim.add("sim-a", reply="recovered", fail_first=1)
    assert llm.get_model("sim-a").prompt("hi", stream=False).text() == "recovered"
    assert [r.status for r in sim.calls("sim-a")] == [429, 200]


def test_reset_releases_hung_requests(sim):
    sim.add("sim-a", latency=30)

    async def call():
        return await llm.get_async_model("sim-a").prompt("hi").text()

    async def run():
        task = asyncio.create_task(call())
        while not sim.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    hung = sim.requests[0]
    start = time.perf_counter()
    sim.reset()
    while hung.finished is None and time.perf_counter() - start < 2:
        time.sleep(0.01)
    assert hung.finished is not None
    assert sim.requests == []


def test_arbiter_xml():
    assert arbiter_xml(confidence=0.5, refinement_areas=["one", "two"]) == (
        "<analysis>Analysis.</analysis>\n"
        "<dissent></dissent>\n"
        "<refinement_areas>\n- one\n- two\n</refinement_areas>\n"
        "<confidence>0.5</confidence>\n"
        "<synthesis>The answer.</synthesis>"
    )


def test_cancelled_stream_leaves_stderr_clean(sim, capfd):
    sim.add("sim-a", reply=" ".join(["word"] * 30), chunk_delay=0.05)
    chunks = []

    async def consume():
        async for chunk in llm.get_async_model("sim-a").prompt("hi"):
            chunks.append(chunk)

    async def run():
        task = asyncio.create_task(consume())
        while not chunks:
            await asyncio.sleep(0.01)
        task.cancel()  # the client hangs up mid-stream
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    [request] = sim.requests
    start = time.perf_counter()
    while request.finished is None and time.perf_counter() - start < 3:
        time.sleep(0.01)
    assert request.finished is not None
    assert capfd.readouterr().err == ""


def test_standalone_demo_prints_its_models_and_a_command_that_works(sim, tmp_path):
    """``python -m llm_consortium.evaluation.simulator``: the YAML it prints, pasted into
    llm's user dir, and the command it prints give a consortium run; it
    writes nothing into the llm user dir it runs with, and Ctrl-C stops it."""
    own_user_dir = tmp_path / "demo-user-dir"
    own_user_dir.mkdir()
    demo = subprocess.Popen([sys.executable, "-m", "llm_consortium.evaluation.simulator", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LLM_USER_PATH": str(own_user_dir)})
    try:
        printed = ""
        while "Ctrl-C stops it." not in printed:
            line = demo.stdout.readline()
            assert line, f"the demo ended early: {demo.stderr.read()}"
            printed += line
        yaml = re.search(r"^(- model_id:.*?)\n\n", printed, re.M | re.S).group(1)
        assert re.search(r'api_base: "http://127\.0\.0\.1:\d+/v1"', yaml)
        (llm.user_dir() / "extra-openai-models.yaml").write_text(yaml + "\n")
        (command,) = [line for line in printed.splitlines() if line.startswith("llm consortium ")]
        result = invoke(*shlex.split(command)[1:])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "There are three r's in strawberry.\n"
        assert "3 of 3 agree, 3 of 3 answered" in result.stderr and "Confidence 0.92" in result.stderr
        assert list(own_user_dir.iterdir()) == []  # nothing written into llm's user directory
    finally:
        demo.send_signal(signal.SIGINT)
        remaining = read_until_closed([demo.stderr.fileno()])[demo.stderr.fileno()]
        assert demo.wait(10) == 0
    assert remaining == b""


# llama.cpp's servers, as measured against them: failures inside a 200 stream, one request at a time.


def raw_post(sim, name, stream):
    """The bytes of a reply as they come over the wire (what the client may skip)."""
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    body = json.dumps({"model": name, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    try:
        return response.status, response.read()
    finally:
        connection.close()


def test_context_overflow_is_an_empty_stream_but_a_400_unstreamed(sim):
    import openai

    sim.add("sim-a", reply="fits", n_ctx=5)
    model = llm.get_model("sim-a")
    assert model.prompt("one two three", stream=False).text() == "fits"
    long = " ".join(["word"] * 6)
    assert "".join(model.prompt(long)) == ""
    with pytest.raises(openai.BadRequestError) as info:
        model.prompt(long, stream=False).text()
    assert info.value.body["code"] == "context_length_exceeded"
    assert info.value.body["message"].startswith("This model's maximum context length is 5 tokens. However, "
                                                 "you requested 6 tokens")
    assert [(r.stream, r.status) for r in sim.calls("sim-a")] == [(False, 200), (True, 200), (False, 400)]


def test_an_error_line_in_a_stream_is_skipped_by_the_client(sim):
    import openai

    sim.add("sim-a", status=400, error_message="old llama.cpp says no", stream_error="error_line")
    model = llm.get_model("sim-a")
    assert "".join(model.prompt("hi")) == ""
    with pytest.raises(openai.BadRequestError, match="old llama.cpp says no"):
        model.prompt("hi", stream=False).text()
    status, body = raw_post(sim, "sim-a", stream=True)
    assert status == 200 and body.startswith(b'error: {"message": "old llama.cpp says no"')


def test_a_data_error_event_in_a_stream_is_raised_by_the_client(sim):
    import openai

    sim.add("sim-a", status=400, error_message="broken mid-stream", stream_error="data")
    with pytest.raises(openai.APIError, match="broken mid-stream"):
        "".join(llm.get_model("sim-a").prompt("hi"))
    status, body = raw_post(sim, "sim-a", stream=True)
    assert status == 200 and body.startswith(b'data: {"error": {"message": "broken mid-stream"')


def test_an_unknown_stream_error_is_refused(sim):
    with pytest.raises(ValueError, match="stream_error must be one of"):
        sim.add("sim-a", status=400, stream_error="smoke")


def parallel_streams(names):
    async def run():
        return await asyncio.gather(*(llm.get_async_model(name).prompt("hi").text() for name in names))

    return asyncio.run(run())


def test_one_llamacpp_server_interrupts_the_stream_in_flight(sim):
    """Three streams at once on one server with interrupt_requests (its
    default): each arrival ends the one in flight at once, empty."""
    names = ["sim-a", "sim-b", "sim-c"]
    sim.add_many(names, reply="an answer", latency=0.5, server="llama", interrupt_requests=True)
    start = time.perf_counter()
    texts = parallel_streams(names)
    assert sorted(texts) == ["", "", "an answer"]
    empty = [r for r in sim.requests if not r.sent]
    assert len(empty) == 2 and all(r.status == 200 and r.finished - start < 0.5 for r in empty)  # before the latency


def test_one_llamacpp_server_without_interrupts_serves_one_request_at_a_time(sim):
    names = ["sim-a", "sim-b", "sim-c"]
    sim.add_many(names, reply="an answer", latency=0.2, server="llama")
    assert parallel_streams(names) == ["an answer"] * 3
    served = sorted((r.sent[0][0], r.finished) for r in sim.requests)
    assert all(first_done <= next_sent for (_, first_done), (next_sent, _) in zip(served, served[1:]))


def test_a_request_not_streamed_is_not_interrupted(sim):
    sim.add_many(["sim-a", "sim-b"], reply="an answer", latency=0.3, server="llama", interrupt_requests=True)

    async def run():
        first = asyncio.create_task(llm.get_async_model("sim-a").prompt("hi", stream=False).text())
        while not sim.requests:
            await asyncio.sleep(0.01)
        return await asyncio.gather(first, llm.get_async_model("sim-b").prompt("hi").text())

    assert asyncio.run(run()) == ["an answer", "an answer"]


def test_reset_releases_requests_waiting_on_a_llamacpp_server(sim):
    sim.add_many(["sim-a", "sim-b"], latency=30, server="llama")

    async def run():
        tasks = [asyncio.create_task(llm.get_async_model(n).prompt("hi").text()) for n in ("sim-a", "sim-b")]
        while len(sim.requests) < 2:
            await asyncio.sleep(0.01)
        hung = list(sim.requests)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return hung

    hung = asyncio.run(run())
    start = time.perf_counter()
    sim.reset()
    while any(r.finished is None for r in hung) and time.perf_counter() - start < 2:
        time.sleep(0.01)
    assert all(r.finished is not None for r in hung)


def test_an_interrupted_stream_ends_with_what_it_had_sent_and_no_finish_reason(sim):
    reply = "one two three four five six seven eight nine"
    sim.add_many(["sim-a", "sim-b"], reply=reply, chunk_delay=0.2, server="llama", interrupt_requests=True)

    async def run():
        first = llm.get_async_model("sim-a").prompt("hi")
        task = asyncio.create_task(first.text())
        while not (sim.requests and sim.requests[0].sent):
            await asyncio.sleep(0.01)
        second = await llm.get_async_model("sim-b").prompt("hi").text()
        return await task, first.response_json, second

    text, response_json, second = asyncio.run(run())
    assert text and reply.startswith(text) and text != reply
    assert "finish_reason" not in response_json  # as llm records a stream that gave none
    assert second == reply
