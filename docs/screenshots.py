"""Record a few simulated runs and photograph the web viewer's pages.

    python docs/screenshots.py     # writes docs/viewer-runs.png, viewer-council.png, viewer-phone*.png

Needs the web extra and selenium (``pip install -e '.[test]'``), and
Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``). Everything runs offline: the members are the scripted
models of llm_consortium/evaluation/simulator.py, in a temporary llm user directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-shots-")
    os.environ.pop("OPENAI_API_KEY", None)
    from llm_consortium.evaluation.simulator import SimProvider, arbiter_xml

    sim = SimProvider()
    answers = {
        "gpt-sim": "Use **SQLite in WAL mode**: readers never block the writer, and one file is easy to back up.",
        "claude-sim": "SQLite with `journal_mode=WAL`, plus a `busy_timeout` so concurrent writers wait "
                      "instead of failing.",
        "gemini-sim": "PostgreSQL: once several processes write at once you want a server.",
    }
    latency = {"gpt-sim": 0.6, "claude-sim": 1.0, "gemini-sim": 0.3}
    for name, answer in answers.items():
        sim.add(name, reply=reviewer(answer), latency=latency[name])
    sim.add("judge-sim", latency=0.4, reply=arbiter_xml(
        "Use **SQLite in WAL mode** with a busy timeout:\n\n1. `PRAGMA journal_mode=WAL`\n"
        "2. `PRAGMA busy_timeout=10000`\n\nMove to PostgreSQL only when writes outgrow one machine.",
        0.9, analysis="Two members agree on WAL; one prefers a server database.",
        dissent="gemini-sim recommends PostgreSQL for concurrent writers."))
    sim.add("careful-sim", latency=0.4, reply=[
        arbiter_xml("SQLite, probably.", 0.6, analysis="Two for SQLite, one for PostgreSQL.",
                    refinement_areas=["Say how concurrent writers are handled"]),
        arbiter_xml("Use **SQLite in WAL mode** with `busy_timeout`; PostgreSQL only when writes outgrow it.", 0.9,
                    analysis="The members now agree on the conditions.")])
    sim.add("voter-a", reply="It is <answer>42</answer>.")
    sim.add("voter-b", reply="6 × 7 = <answer>42</answer>")
    sim.add("voter-c", reply="<answer>41</answer>")
    members = ["-m", "gpt-sim", "-m", "claude-sim", "-m", "gemini-sim", "--arbiter", "judge-sim"]
    llm(["consortium", "save", "trio", *members[:-1], "careful-sim", "--confidence-threshold", "0.85"])
    llm(["consortium", "save", "council", *members, "--method", "council"])
    llm(["consortium", "save", "voters", "-m", "voter-a", "-m", "voter-b", "-m", "voter-c", "--arbiter",
         "judge-sim", "--method", "vote", "--confidence-threshold", "0.6"])
    llm(["-m", "trio", "Which database should a small local tool use to record its runs?"])
    llm(["-m", "voters", "What is 6 × 7?"])
    llm(["-m", "council", "Which database should a small local tool use to record its runs?"])

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    url = start_viewer()
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(argument)
    os.environ["SE_OFFLINE"] = "true"
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.set_window_size(1400, 620)
        browser.get(url)
        browser.save_screenshot(str(ROOT / "docs" / "viewer-runs.png"))
        council, trio = [link.get_attribute("href") for link in browser.find_elements(
            "link text", "Which database should a small local tool use to record its runs?")]
        browser.set_window_size(1400, 1300)
        browser.get(council)
        browser.save_screenshot(str(ROOT / "docs" / "viewer-council.png"))
        # A phone: the runs list in light, a run of two rounds in dark (prefers-color-scheme)
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True})
        browser.get(url)
        browser.save_screenshot(str(ROOT / "docs" / "viewer-phone-runs.png"))
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        browser.get(trio)
        browser.save_screenshot(str(ROOT / "docs" / "viewer-phone-dark.png"))
    finally:
        browser.quit()
        sim.close()
    print("wrote docs/viewer-runs.png, viewer-council.png, viewer-phone-runs.png and viewer-phone-dark.png")


def reviewer(answer: str):
    """A member that answers ``answer`` and, asked to review, ranks the
    responses it is shown by the quality its text claims (best first)."""

    def reply(request):
        if "FINAL RANKING:" not in request.user:
            return answer
        labels = re.findall(r"BEGIN (Response [A-Z]+)>>>\n(.*?)\n<<<", request.user, re.S)
        best_first = sorted(labels, key=lambda item: ("WAL" in item[1], "busy" in item[1]), reverse=True)
        return "Compared each.\nFINAL RANKING:\n" + "\n".join(
            f"{i}. {label}" for i, (label, _) in enumerate(best_first, 1))

    return reply


def llm(arguments: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "llm", *arguments], check=True, capture_output=True, text=True)


def start_viewer() -> str:
    from llm_consortium.faces.web.app import listen, server

    sock = listen("127.0.0.1", 0)
    viewer = server(sock, "127.0.0.1")
    threading.Thread(target=viewer.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not viewer.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/"


if __name__ == "__main__":
    main()
