"""The README's Quick Start, as written, on a fresh virtual environment:
get llm, install the plugin from this clone with `llm install -e .` and run
the demo (no key, no server, no YAML: an answer, and llm's models as they
were), then the real-key command (no key here: one clear line naming the
keys), and the local OpenAI-compatible option (against the simulated
provider)."""

import re
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


def quick_start_commands() -> list[str]:
    """The Quick Start's bash blocks, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_as_written(sim, fresh_llm):
    demo, real = quick_start_commands()[:2]
    assert demo == "llm install -e . && llm consortium demo"
    assert real.startswith("llm consortium ")
    user_dir = sim_user_dir()
    env = {"PATH": f"{fresh_llm}:/usr/bin:/bin", "LLM_USER_PATH": str(user_dir),
           "PIP_NO_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # The demo first: installed, then an answer with no key, no server and no YAML.
    result = subprocess.run(["bash", "-c", demo], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "There are three r's in strawberry."
    assert "Confidence 0.92 · 3 of 3 agree" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("That was a simulated provider")
    assert not (user_dir / "extra-openai-models.yaml").exists()

    def llm(*args):
        return subprocess.run([str(fresh_llm / "llm"), *args], env=env, capture_output=True, text=True, timeout=120)

    models = llm("models").stdout
    assert "demo-" not in models
    assert llm("consortium", "demo").returncode == 0
    assert llm("models").stdout == models
    # The real-key command second: stopped before any call, a key is needed, and the error says which and how.
    result = subprocess.run(["bash", "-c", real], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
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
