"""The README's Quick Start, as written, on a fresh virtual environment:
get llm, install the plugin from this clone with `llm install -e .`, run
the consortium command (no key here: one clear line naming the keys), and
the local OpenAI-compatible option (against the simulated provider)."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import readme_block

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fresh_llm(tmp_path_factory):
    """A new virtual environment with only pip and llm installed, as
    `pip install llm` leaves it. This interpreter's pip fills it (``--python``),
    without byte-compiling: Python compiles what it imports, and the test
    spends its time on the Quick Start rather than on pip's startup."""
    venv = tmp_path_factory.mktemp("quickstart") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                "--quiet", "--no-compile", "--disable-pip-version-check", "pip", "llm"],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


def test_quick_start_as_written(sim, fresh_llm):
    command = readme_block("Quick start", "bash").strip()
    assert command.startswith("llm install -e . && llm consortium ")
    env = {"PATH": f"{fresh_llm}:/usr/bin:/bin", "LLM_USER_PATH": str(sim_user_dir()),
           "PIP_NO_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    # Installed, then stopped before any call: a key is needed, and the error says which and how.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: No API key for: gpt-4o-mini") and "llm keys set openai" in last
    # The local option from the Quick Start, with the simulated provider in place of the server.
    from llm_consortium.evaluation.simulator import arbiter_xml

    sim.add("llama3.2", reply=lambda request: arbiter_xml("Three.", 0.9)
            if "<original_prompt>" in request.user else "There are three.")
    yaml = readme_block("Quick start", "yaml").replace("http://localhost:11434/v1", sim.base_url)
    (sim_user_dir() / "extra-openai-models.yaml").write_text(yaml)  # the README's, not the simulator's
    local = subprocess.run([str(fresh_llm / "llm"), "consortium", "How many r's are in strawberry?",
                            "-m", "local-llama:3", "--arbiter", "local-llama"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    assert local.stdout == "Three.\n"


def sim_user_dir() -> Path:
    import llm

    return llm.user_dir()
