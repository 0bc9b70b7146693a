"""How to get an optional extra (``web``, ``plot``) where llm runs.

The plugin is installed from a clone (``llm install -e .``), not from PyPI,
whose ``llm-consortium`` is an old release: so the hint names the extra's
own packages, read from the plugin's installed metadata (pyproject.toml's
optional-dependencies, the one list of them), for ``llm install``, which
runs pip in llm's own environment.
"""

import re
import shlex
from importlib.metadata import requires


def install_command(extra: str) -> str:
    """``llm install`` with the packages of ``extra``, quoted for a shell."""
    packages = []
    for requirement in requires("llm-consortium") or []:
        package, _, marker = requirement.partition(";")
        if re.fullmatch(rf"""\s*extra\s*==\s*["']{re.escape(extra)}["']\s*""", marker):
            packages.append(shlex.quote(package.strip()))
    return "llm install " + " ".join(packages)
