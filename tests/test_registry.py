"""The method registry: a method is one file in core/methods, and every
list of methods and every face takes it from there.

The walk-through's method (docs/architecture.md, "Adding a method") is
read from that page and written, alone, to a temporary folder on the
methods package's path: no file of the package changes, and the method
is offered by --help, run, recorded, shown by the run summary, inspect
and the viewer, and taken by rejudge and eval."""

import http.client
import importlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import invoke
from llm_consortium.core import methods
from llm_consortium.evaluation.simulator import arbiter_xml

DOCS = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
TOY = "llm_consortium.core.methods.longest"
LONG = "Paris, the capital of France since 987."


def walkthrough_method() -> str:
    """The one file the walk-through adds, as the page shows it."""
    found = re.search(r"```python\n(# llm_consortium/core/methods/longest\.py\n.*?)```", DOCS.read_text(), re.S)
    assert found, "docs/architecture.md has no 'Adding a method' file"
    return found.group(1)


@pytest.fixture
def longest(tmp_path, monkeypatch):
    """The walk-through's method, on the methods package's path (as a file
    in core/methods would be), and gone afterwards."""
    folder = tmp_path / "methods"
    folder.mkdir()
    (folder / "longest.py").write_text(walkthrough_method())
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(folder)])
    importlib.invalidate_caches()
    yield
    sys.modules.pop(TOY, None)


def test_the_registry_lists_the_methods_without_importing_them():
    assert methods.names() == ("arbiter", "council", "vote")
    code = ("import sys; from llm_consortium.core import methods; names = methods.names(); "
            "print(names, [m for m in sys.modules if m.startswith('llm_consortium.core.methods.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "('arbiter', 'council', 'vote') []\n"


def test_every_method_declares_what_the_registry_reads():
    for name in methods.names():
        module = methods.method(name)
        assert module.NAME == name and module.HELP and "\n" not in module.HELP
        assert all(callable(getattr(module, hook)) for hook in ("judge", "judges", "render", "answer"))
    assert methods.judges("council", "chair", ["a", "b", "c"]) == [("chair", 3), ("a", 2), ("b", 2), ("c", 2)]
    assert methods.judges("council", "chair", ["a", "b"]) == [("chair", 2)]  # too few answers to review
    assert methods.judges("vote", "chair", ["a", "b"]) == methods.judges("arbiter", "chair", ["a", "b"])
    with pytest.raises(ValueError, match="Unknown method 'debate': choose one of arbiter, council, vote"):
        methods.method("debate")


def test_a_method_is_named_by_its_file(tmp_path, monkeypatch):
    (tmp_path / "misnamed.py").write_text('NAME = "other"\nHELP = "a method whose NAME is not its file\'s"\n')
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    importlib.invalidate_caches()
    try:
        with pytest.raises(ValueError, match="misnamed.py declares the NAME 'other'"):
            methods.method("misnamed")
    finally:
        sys.modules.pop("llm_consortium.core.methods.misnamed", None)


def test_render_gives_data_that_each_face_formats():
    from llm_consortium.faces.display import method_details

    details = {"ranking": [{"label": "Response A", "model": "m1", "instance": 1, "score": 1.0,
                            "interval": [0.5, 1.0], "ballots": 0}],
               "dropped": [{"model": "m2", "instance": 1, "reason": "no ranking"}], "review_skipped": None}
    assert methods.render("council", details) == [
        {"kind": "ranking", "title": "Peer ranking", "rows": details["ranking"]},
        {"kind": "note", "text": "Peer review produced no usable ballots: the chairman judged without a ranking."},
        {"kind": "note", "label": "Ballot of m2 #1 dropped", "text": "no ranking", "detail": True},
    ]
    # the terminal: no ranking that no ballot supports, no detail
    assert method_details("council", details) == [
        "Peer review produced no usable ballots: the chairman judged without a ranking."]
    assert methods.render("debate", details) == []  # recorded by a method not installed here


def test_a_method_added_as_one_file_is_offered_run_recorded_and_shown(sim, longest):
    assert "longest" in methods.names()
    help_text = invoke("consortium", "run", "--help").stdout
    assert "[arbiter|council|longest|vote]" in help_text
    assert "longest: the longest answer wins; no judge is asked" in " ".join(help_text.split())

    sim.add("m1", reply="Paris.")
    sim.add("m2", reply=LONG)
    sim.add("judge", reply=arbiter_xml("unused", 0.9))
    result = invoke("consortium", "run", "What is the capital of France?", "-m", "m1", "-m", "m2",
                    "--arbiter", "judge", "--method", "longest", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == LONG + "\n"
    assert f"Longest answer: m2#1 ({len(LONG)} characters)" in result.stderr
    assert sim.calls("judge") == []  # the method asks no judge

    record = json.loads(invoke("consortium", "inspect", "--json").stdout)
    assert record["method"] == "longest" and record["status"] == "success"
    assert record["rounds"][0]["details"]["chosen"] == "m2#1"
    shown = invoke("consortium", "inspect", record["id"]).stdout
    assert f"Longest answer: m2#1 ({len(LONG)} characters)" in shown

    page, index = viewer_pages(f"/runs/{record['id']}", "/")
    assert f'<p class="notice">Longest answer: m2#1 ({len(LONG)} characters)</p>' in page
    assert '<option value="longest">longest</option>' in index

    rejudged = invoke("consortium", "rejudge", record["id"], "--method", "longest", "--json")
    assert json.loads(rejudged.stdout)["synthesis"]["synthesis"] == LONG

    from llm_consortium.faces.eval_command import every_method, parse_methods

    assert every_method() == ["vote", "arbiter", "council", "longest"]  # no EVAL_ORDER: last
    assert parse_methods("longest,vote") == ["longest", "vote"]


def test_a_method_unknown_here_is_refused_in_one_line(sim):
    result = invoke("consortium", "run", "q", "-m", "m1", "--arbiter", "judge", "--method", "longest")
    assert result.exit_code == 2 and "'longest' is not one of 'arbiter', 'council', 'vote'" in result.stderr
    assert "Unknown method 'longest': choose one of arbiter, council, vote" in invoke(
        "consortium", "run", "q", "-m", "m1", "--arbiter", "judge", "-o", "method", "longest").stderr


def viewer_pages(*paths: str) -> list[str]:
    """The viewer in this process, on a free loopback port: the HTML of each path."""
    from llm_consortium.faces.web.app import listen, server

    sock = listen("127.0.0.1", 0)
    running = server(sock, "127.0.0.1")
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.02)
    port = sock.getsockname()[1]
    pages = []
    try:
        for path in paths:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
            response = connection.getresponse()
            assert response.status == 200
            pages.append(response.read().decode())
    finally:
        running.should_exit = True
        thread.join(10)
    return pages
