"""Real error causes (issue 19, item 4), through llm's real OpenAI client
against the simulated provider emulating llama.cpp's servers: failures that
a 200 stream hides, connections that fail, and one server that interrupts
the request in flight."""

import socket

import llm

from llm_consortium import ConsortiumOrchestrator
from llm_consortium.core.observer import Observer
from llm_consortium.evaluation.simulator import arbiter_xml

FAST = {"retry_backoff": 0.01}
OVERFLOW = "The prompt does not fit the model's context window"


def run(sim, models=("m1", "m2"), **kw):
    return ConsortiumOrchestrator(models=list(models), arbiter="judge", **{**FAST, **kw}).orchestrate_sync(
        "What is the capital of France? Answer in one word."
    )


def member(result, name):
    return next(m for m in result["model_responses"] if m["model"] == name)


def test_a_streamed_context_overflow_is_reported_as_one(sim):
    """llama-cpp-python answers a streamed prompt over its context with an
    empty 200 stream; asked again unstreamed, it says why (HTTP 400)."""
    sim.add("m1", reply="Paris.", n_ctx=5)
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    error = member(run(sim), "m1")["error"]
    assert error.startswith(OVERFLOW) and "HTTP 400" not in error
    assert "This model's maximum context length is 5 tokens" in error and "\n" not in error
    assert [(r.stream, r.status) for r in sim.calls("m1")] == [(True, 200), (False, 400)]


def test_an_arbiter_over_its_context_in_a_stream_gets_the_compact_prompt(sim):
    sim.add_many(["m1", "m2"], reply="Paris is the capital of France. " * 10)
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    run(sim)
    full = len(sim.calls("judge")[0].text.split())
    sim.reset()
    sim.add_many(["m1", "m2"], reply="Paris is the capital of France. " * 10)
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9), n_ctx=full - 1)
    result = run(sim)
    assert result["synthesis"]["synthesis"] == "Paris." and not result["synthesis"].get("fallback")
    statuses = [(r.stream, r.status) for r in sim.calls("judge")]
    assert statuses == [(True, 200), (False, 400), (True, 200)]  # the full prompt twice, then the compact one
    assert len(sim.calls("judge")[2].text.split()) < full


def test_an_error_line_the_client_skips_is_learnt_unstreamed(sim):
    """Older llama.cpp builds send ``error: {...}`` inside a 200 stream."""
    sim.add("m1", status=400, error_message="the slot is unavailable", stream_error="error_line")
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    error = member(run(sim), "m1")["error"]
    assert error == "BadRequestError: Error code: 400 - the slot is unavailable"


def test_a_data_error_event_in_a_stream_is_the_error(sim):
    sim.add("m1", status=400, error_message="the slot is unavailable", stream_error="data")
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    assert member(run(sim), "m1")["error"] == "APIError: the slot is unavailable"
    assert [r.stream for r in sim.calls("m1")] == [True]  # raised by the client: nothing to learn


def test_an_empty_reply_streamed_or_not_stays_an_empty_reply(sim):
    sim.add("m1", reply="")
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    assert member(run(sim), "m1")["error"].startswith("EmptyReply: ")
    assert [r.stream for r in sim.calls("m1")] == [True, False]


def test_a_streamed_reply_that_is_empty_once_is_answered_unstreamed(sim):
    sim.add("m1", reply=["", "Paris."])
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    assert member(run(sim), "m1")["text"] == "Paris."


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_names_host_port_and_cause(sim):
    port = closed_port()
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    path = llm.user_dir() / "extra-openai-models.yaml"
    path.write_text(path.read_text() + f'- model_id: m1\n  model_name: m1\n  api_base: "http://127.0.0.1:{port}/v1"\n')
    error = member(run(sim, attempts=1), "m1")["error"]
    assert error.startswith(f"APIConnectionError: Connection error. (127.0.0.1:{port}: ConnectionRefusedError: ")
    assert "Errno 111" in error and "\n" not in error


def test_a_dropped_connection_names_host_port_and_cause(sim):
    sim.add("m1", reply="Paris is the capital of France, and has been for centuries.", cut_first=5)
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    error = member(run(sim, attempts=1), "m1")["error"]
    assert error.startswith(f"APIConnectionError: Connection error. (127.0.0.1:{sim.port}: ")
    assert "peer closed connection" in error


# llama.cpp's interrupt pattern: one server, several members at once


class Notes(Observer):
    """The run's notes, as the run ends."""

    def __init__(self):
        self.notes = None

    def run_finished(self, run, result):
        self.notes = list(getattr(run, "notes", []))


def run_noting(sim, models, **kw):
    notes = Notes()
    result = ConsortiumOrchestrator(models=list(models), arbiter="judge", observers=[notes], **{**FAST, **kw}) \
        .orchestrate_sync("What is the capital of France?")
    return result, notes.notes


HINT = "came back empty or cut short at once, as when llama.cpp's server cancels a request for each new " \
       "one: start it with --interrupt_requests False"


def test_members_that_interrupt_each_other_on_one_server_all_answer_with_a_hint(sim):
    """Of three members asked at once on a llama.cpp server with its default
    interrupt_requests, one answered and two came back empty (measured)."""
    names = ["m1", "m2", "m3"]
    sim.add_many(names, reply="Paris.", latency=0.3, server="llama", interrupt_requests=True)
    sim.add("judge", reply=arbiter_xml("Paris.", 0.5))
    result, notes = run_noting(sim, names, max_iterations=2, confidence_threshold=0.9)
    assert len(result["iterations"]) == 2
    for round_ in result["iterations"]:
        assert [m["text"] for m in round_["model_responses"]] == ["Paris."] * 3
    assert notes == [f"Members on 127.0.0.1:{sim.port} {HINT}"]  # once, though both rounds had it


def test_members_of_one_server_empty_even_unstreamed_are_asked_again_one_at_a_time(sim):
    sim.add_many(["m1", "m2"], reply=["", "", "Paris."])
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    result, notes = run_noting(sim, ["m1", "m2"])
    assert [m["text"] for m in result["model_responses"]] == ["Paris.", "Paris."]
    first, second = sorted((sim.calls(name)[2] for name in ("m1", "m2")), key=lambda r: r.started)
    assert first.finished <= second.started  # one at a time
    assert [len(sim.calls(name)) for name in ("m1", "m2")] == [3, 3]
    assert notes == [f"Members on 127.0.0.1:{sim.port} {HINT}"]


def test_one_empty_member_is_no_interrupt_pattern(sim):
    sim.add("m1", reply="")
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    result, notes = run_noting(sim, ["m1", "m2"])
    assert result["model_responses"][0]["error"].startswith("EmptyReply")
    assert len(sim.calls("m1")) == 2 and notes == []


def test_a_server_without_interrupts_gets_no_hint(sim):
    names = ["m1", "m2", "m3"]
    sim.add_many(names, reply="Paris.", latency=0.1, server="llama")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    result, notes = run_noting(sim, names)
    assert [m["text"] for m in result["model_responses"]] == ["Paris."] * 3
    assert notes == [] and len(sim.requests) == 4


def test_a_stream_the_server_cut_short_is_not_an_answer(sim):
    """Measured on llama.cpp's server: a member's stream ended mid-reply
    ("The capital") when another member's request arrived, and read as its
    answer. A stream that ends without a finish_reason is asked for again."""
    names = ["m1", "m2", "m3"]
    answer = "The capital of France is Paris, on the Seine."
    sim.add_many(names, reply=answer, chunk_delay=0.2, server="llama", interrupt_requests=True)
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    result, notes = run_noting(sim, names)
    assert [m["text"] for m in result["model_responses"]] == [answer] * 3
    assert any("".join(piece for _, piece in r.sent) not in ("", answer) for r in sim.requests)  # one was cut
