"""``llm consortium eval``: against simulated members of known accuracy,
through llm's real client."""

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import llm_consortium
from llm_consortium import store
from llm_consortium.evaluate import eval_command
from simprovider import arbiter_xml

DATASET = Path(llm_consortium.__file__).parent / "data" / "sample-eval.jsonl"
ITEMS = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
TRUTH = {item["prompt"]: item["answer"] for item in ITEMS}
ACCURACY = {"sim-strong": 0.9, "sim-middle": 0.7, "sim-weak": 0.5}
MEMBERS = list(ACCURACY)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>")


def is_right(model: str, prompt: str) -> bool:
    """Whether ``model`` answers ``prompt`` correctly: fixed per item, right with its ACCURACY."""
    draw = int(hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:8], 16) / 16**8
    return draw < ACCURACY[model]


def wrong(answer: str) -> str:
    """A wrong answer of the same kind: the next letter, or the number plus one."""
    if answer in "ABCD":
        return "ABCD"["ABCD".index(answer) - 3]
    return str(Decimal(answer) + 1)


def member_answer(model: str, prompt: str) -> str:
    truth = TRUTH[prompt]
    return truth if is_right(model, prompt) else wrong(truth)


def fenced_answers(prompt: str) -> dict[str, str]:
    """Label -> the <answer> of each fenced response in a judging prompt."""
    fence = re.search(r"<<<(FENCE-[0-9a-f]{16}) BEGIN label>>>", prompt).group(1)
    blocks = re.findall(rf"<<<{fence} BEGIN (.+?)>>>\n(.*?)\n<<<{fence} END \1>>>", prompt, re.S)
    return {label: ANSWER_TAG.findall(text)[-1] for label, text in blocks}


def original_prompt(prompt: str) -> str:
    return re.search(r"<original_prompt>\n(.*?)\n</original_prompt>", prompt, re.S).group(1)


def member(request) -> str:
    """A member; as a council reviewer it puts the correct answers first."""
    if "FINAL RANKING:" not in request.user:
        return f"Working it out step by step.\n<answer>{member_answer(request.model, request.user)}</answer>"
    truth = TRUTH[original_prompt(request.user)]
    shown = fenced_answers(request.user)
    ranked = sorted(shown, key=lambda label: shown[label] != truth)
    return "Reviews.\nFINAL RANKING:\n" + "\n".join(f"{i}. {label}" for i, label in enumerate(ranked, 1))


def judge(request) -> str:
    """The arbiter picks the most common answer (the first on a tie); as the
    council's chair it picks the answer ranked first by the reviewers."""
    answers = fenced_answers(request.user)
    if "# Peer review" in request.user:
        top = re.search(r"^1\. (Response [A-Z]+):", request.user, re.M).group(1)
        chosen = answers[top]
    else:
        chosen = Counter(answers.values()).most_common(1)[0][0]
    return arbiter_xml(f"<answer>{chosen}</answer>", 0.9)


@pytest.fixture
def panel(sim):
    for name in MEMBERS:
        sim.add(name, reply=member)
    sim.add("sim-judge", reply=judge)
    return sim


def run_eval(*args):
    return CliRunner().invoke(eval_command, [str(DATASET), *args], catch_exceptions=False)


def table_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["method", "accuracy", "correct", "tokens", "seconds", "calls"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


ALL_MEMBERS = ["-m", "sim-strong", "-m", "sim-middle", "-m", "sim-weak", "--arbiter", "sim-judge"]


def test_table_on_the_shipped_dataset_then_a_replay_makes_no_call(panel):
    assert len(ITEMS) >= 30
    result = run_eval(*ALL_MEMBERS)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert list(rows) == MEMBERS + ["oracle", "vote", "arbiter", "council"]

    def correct(method):
        return int(rows[method][1].split("/")[0])

    by_item = [[member_answer(m, item["prompt"]) for m in MEMBERS] for item in ITEMS]
    for i, name in enumerate(MEMBERS):
        assert correct(name) == sum(answers[i] == item["answer"] for answers, item in zip(by_item, ITEMS))
        assert rows[name][-1] == "40"  # one call per item
    assert correct("oracle") == sum(item["answer"] in answers for answers, item in zip(by_item, ITEMS))
    majority = [Counter(answers).most_common(2) for answers in by_item]
    expected_vote = sum(
        top[0][0] == item["answer"] and (len(top) == 1 or top[0][1] > top[1][1]) for top, item in zip(majority, ITEMS)
    )
    assert correct("vote") == expected_vote
    assert correct("arbiter") == sum(
        Counter(answers).most_common(1)[0][0] == item["answer"] for answers, item in zip(by_item, ITEMS)
    )
    # reviewers that put correct answers first find the right one whenever a member has it
    assert correct("council") == correct("oracle")
    assert rows["vote"][-1] == "120" and rows["arbiter"][-1] == "160" and rows["council"][-1] == "280"
    assert "answered 40/40" in result.stderr and "council: judged 40/40" in result.stderr
    assert "320 new model calls" in result.stderr
    calls = len(panel.requests)
    assert calls == 320

    replay = run_eval(*ALL_MEMBERS, "--json")
    assert replay.exit_code == 0, replay.output
    assert len(panel.requests) == calls  # every answer and judgement came from the cache
    data = json.loads(replay.stdout)
    assert data["new_calls"] == 0 and data["items"] == 40 and data["members"] == MEMBERS
    assert {row["method"]: row["correct"] for row in data["results"]} == {name: correct(name) for name in rows}
    council = data["results"][-1]
    assert council["calls"] == 280 and council["tokens"] == council["input_tokens"] + council["output_tokens"] > 0
    assert set(council) == {"method", "kind", "items", "correct", "accuracy", "calls", "input_tokens",
                            "output_tokens", "tokens", "seconds", "errors"}


def test_unknown_model_is_one_error_line_and_no_call(panel):
    result = run_eval("-m", "sim-strong", "-m", "no-such-model", "--arbiter", "sim-judge")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Unknown model: no-such-model (see 'llm models' for the installed ones)"
    ]
    assert panel.requests == []


def test_plot_without_matplotlib_fails_before_any_call(panel, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = run_eval(*ALL_MEMBERS, "--plot", "chart.png")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["Error: --plot needs matplotlib: pip install matplotlib"]
    assert panel.requests == []


def test_plot_is_saved(panel, tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "chart.png"
    result = run_eval(*ALL_MEMBERS, "--limit", "3", "--methods", "vote", "--plot", str(chart))
    assert result.exit_code == 0, result.output
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_saved_consortium_limit_and_samples(panel):
    store.save_config("trio", {"models": ["sim-strong:2", "sim-weak"], "arbiter": "sim-judge"})
    result = run_eval("--consortium", "trio", "--limit", "5", "--methods", "vote,arbiter")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert list(rows) == ["sim-strong", "sim-strong#2", "sim-weak", "oracle", "vote", "arbiter"]
    assert len(panel.calls("sim-strong")) == 10  # two samples of each of five items
    assert len(panel.calls("sim-judge")) == 5
    assert all(row[1].endswith("/5") for row in rows.values())

    calls = len(panel.requests)
    again = run_eval("--consortium", "trio", "--limit", "5", "--methods", "vote,arbiter")
    assert again.stdout == result.stdout
    assert len(panel.requests) == calls == 20


def test_missing_consortium_or_arbiter(panel):
    assert run_eval("--consortium", "nope").stderr.strip() == (
        "Error: No saved consortium named 'nope' (see 'llm consortium list')"
    )
    assert "need --arbiter MODEL" in run_eval("-m", "sim-strong", "-m", "sim-weak").stderr
    assert "Give the members" in run_eval("--arbiter", "sim-judge").stderr
    assert "Unknown method debate" in run_eval(*ALL_MEMBERS, "--methods", "vote,debate").stderr
    assert panel.requests == []
    # the vote alone needs no arbiter
    result = run_eval("-m", "sim-strong", "-m", "sim-weak", "--methods", "vote", "--limit", "2")
    assert result.exit_code == 0 and list(table_rows(result.stdout)) == ["sim-strong", "sim-weak", "oracle", "vote"]


def test_failed_answers_count_as_wrong_and_are_asked_again(panel):
    panel.add("sim-broken", status=400, error_message="bad request")
    args = ["-m", "sim-strong", "-m", "sim-broken", "--methods", "vote", "--limit", "4"]
    result = run_eval(*args)
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout)["sim-broken"][1] == "0/4"
    assert "4 answers or judgements failed and count as wrong" in result.stderr
    run_eval(*args)
    assert len(panel.calls("sim-strong")) == 4  # cached
    assert len(panel.calls("sim-broken")) == 8  # asked again


def test_bad_dataset_line_names_the_line(panel, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n{"prompt": "no answer"}\n')
    result = CliRunner().invoke(eval_command, [str(data), *ALL_MEMBERS])
    assert result.exit_code == 1
    assert "line 2" in result.stderr and panel.requests == []


def test_importing_the_command_does_not_load_the_engine():
    code = "import sys, llm_consortium.evaluate; print('llm_consortium.engine' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
