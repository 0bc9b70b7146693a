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
    """Label -> the <answer> of each fenced response in a judging prompt (not the vote's tally)."""
    fence = re.search(r"<<<(FENCE-[0-9a-f]{16}) BEGIN label>>>", prompt).group(1)
    blocks = re.findall(rf"<<<{fence} BEGIN (.+?)>>>\n(.*?)\n<<<{fence} END \1>>>", prompt, re.S)
    return {label: ANSWER_TAG.findall(text)[-1] for label, text in blocks if ANSWER_TAG.search(text)}


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


COLUMNS = ["method", "accuracy", "correct", "tokens", "seconds", "calls", "failed", "fallback"]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by method, each row's cells after the method's name."""
    lines = stdout.strip().split("\n\n")[0].splitlines()
    assert lines[0].split() == COLUMNS
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def cell(rows, method: str, column: str) -> str:
    return rows[method][COLUMNS.index(column) - 1]


def listed_below(stdout: str) -> list[str]:
    """The lines below the table: the items that failed or fell back."""
    _, _, below = stdout.strip().partition("\n\n")
    return [line.strip() for line in below.splitlines()]


ALL_MEMBERS = ["-m", "sim-strong", "-m", "sim-middle", "-m", "sim-weak", "--arbiter", "sim-judge"]


def test_table_on_the_shipped_dataset_then_a_replay_makes_no_call(panel):
    assert len(ITEMS) >= 30
    result = run_eval(*ALL_MEMBERS)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert list(rows) == MEMBERS + ["oracle", "vote", "arbiter", "council"]

    def correct(method):
        return int(cell(rows, method, "correct").split("/")[0])

    by_item = [[member_answer(m, item["prompt"]) for m in MEMBERS] for item in ITEMS]
    for i, name in enumerate(MEMBERS):
        assert correct(name) == sum(answers[i] == item["answer"] for answers, item in zip(by_item, ITEMS))
        assert cell(rows, name, "calls") == "40"  # one call per item
    assert correct("oracle") == sum(item["answer"] in answers for answers, item in zip(by_item, ITEMS))
    # the real vote: 2 of 3 (67 %) is below the default threshold of 80 %, so the
    # arbiter, which picks the most common answer (the first on a tie), decides those
    unanimous = sum(len(set(answers)) == 1 for answers in by_item)
    picked = sum(Counter(answers).most_common(1)[0][0] == item["answer"] for answers, item in zip(by_item, ITEMS))
    assert correct("vote") == correct("arbiter") == picked
    # reviewers that put correct answers first find the right one whenever a member has it
    assert correct("council") == correct("oracle")
    vote_calls = 120 + 40 - unanimous
    assert [cell(rows, m, "calls") for m in ("vote", "arbiter", "council")] == [str(vote_calls), "160", "280"]
    assert {cell(rows, m, c) for m in rows for c in ("failed", "fallback")} == {"0"}
    assert listed_below(result.stdout) == []
    assert "answered 40/40" in result.stderr and "council: judged 40/40" in result.stderr
    calls = len(panel.requests)
    assert calls == 320 + 40 - unanimous
    assert f"{calls} new model calls" in result.stderr

    replay = run_eval(*ALL_MEMBERS, "--json")
    assert replay.exit_code == 0, replay.output
    assert len(panel.requests) == calls  # every answer and judgement came from the cache
    data = json.loads(replay.stdout)
    assert data["new_calls"] == 0 and data["items"] == 40 and data["members"] == MEMBERS
    assert {row["method"]: row["correct"] for row in data["results"]} == {name: correct(name) for name in rows}
    council = data["results"][-1]
    assert council["calls"] == 280 and council["tokens"] == council["input_tokens"] + council["output_tokens"] > 0
    assert set(council) == {"method", "kind", "items", "correct", "accuracy", "calls", "input_tokens",
                            "output_tokens", "tokens", "seconds", "failed", "fallback", "problems"}
    assert council["failed"] == council["fallback"] == 0 and council["problems"] == []


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
    split = sum(member_answer("sim-strong", i["prompt"]) != member_answer("sim-weak", i["prompt"]) for i in ITEMS[:5])
    assert len(panel.calls("sim-judge")) == 5 + split  # the arbiter's, and the vote's below its threshold
    assert all(row[1].endswith("/5") for row in rows.values())

    calls = len(panel.requests)
    again = run_eval("--consortium", "trio", "--limit", "5", "--methods", "vote,arbiter")
    assert again.stdout == result.stdout
    assert len(panel.requests) == calls == 20 + split


def test_missing_consortium_or_arbiter(panel):
    assert run_eval("--consortium", "nope").stderr.strip() == (
        "Error: No saved consortium named 'nope' (see 'llm consortium list')"
    )
    assert "need --arbiter MODEL" in run_eval("-m", "sim-strong", "-m", "sim-weak").stderr
    # the vote too: it asks the arbiter when there is no clear majority
    assert "need --arbiter MODEL" in run_eval("-m", "sim-strong", "-m", "sim-weak", "--methods", "vote").stderr
    assert "Give the members" in run_eval("--arbiter", "sim-judge").stderr
    assert "Unknown method debate" in run_eval(*ALL_MEMBERS, "--methods", "vote,debate").stderr
    assert panel.requests == []


def test_failed_answers_count_as_wrong_and_are_asked_again(panel):
    panel.add("sim-broken", status=400, error_message="bad request")
    args = ["-m", "sim-strong", "-m", "sim-broken", "--arbiter", "sim-judge", "--methods", "vote", "--limit", "4"]
    result = run_eval(*args)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert cell(rows, "sim-broken", "correct") == "0/4" and cell(rows, "sim-broken", "failed") == "4"
    assert cell(rows, "sim-strong", "failed") == "0"
    assert listed_below(result.stdout)[1:] == [
        "sim-broken failed on items 1-4: BadRequestError: Error code: 400 - bad request"
    ]
    # 8 member calls, and the arbiter on every item: one answer is nothing to vote on
    assert "12 new model calls (4 failed, not cached: a rerun asks again)" in result.stderr
    run_eval(*args)
    assert len(panel.calls("sim-strong")) == 4  # cached
    assert len(panel.calls("sim-broken")) == 8  # asked again


def test_judgements_that_fell_back_are_counted_and_listed_per_method(panel):
    refused, unreadable = ITEMS[1]["prompt"], ITEMS[2]["prompt"]

    def flaky_judge(request):
        asked = original_prompt(request.user)
        if asked == refused:
            raise ValueError("no judgement here")  # the sim answers it with HTTP 400
        if asked == unreadable:
            return "I would rather not say."
        return judge(request)

    panel.add("sim-judge", reply=flaky_judge)
    args = [*ALL_MEMBERS, "--limit", "4"]
    result = run_eval(*args)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    for method in MEMBERS + ["oracle"]:
        assert (cell(rows, method, "failed"), cell(rows, method, "fallback")) == ("0", "0")
    for method in ("arbiter", "council"):
        assert (cell(rows, method, "failed"), cell(rows, method, "fallback")) == ("0", "2")
    # the vote asks the arbiter only on the items without a clear majority
    split = [n for n in (2, 3) if len({member_answer(m, ITEMS[n - 1]["prompt"]) for m in MEMBERS}) > 1]
    assert (cell(rows, "vote", "failed"), cell(rows, "vote", "fallback")) == ("0", str(len(split)))
    below = listed_below(result.stdout)
    assert below[0].startswith("Failed (scored as wrong) or fell back to the members' majority")
    refusal = "BadRequestError: Error code: 400 - reply callable raised ValueError('no judgement here')"
    unread = "the arbiter's reply could not be read, even after a reminder of the format"
    for method in ("arbiter", "council"):
        assert f"{method} fell back on item 2: the arbiter failed: {refusal}" in below
        assert f"{method} fell back on item 3: {unread}" in below
    assert len(below) == 5 + len(split)

    # the members' majority decided those items, and is scored as that answer
    def majority(prompt):
        return Counter(member_answer(m, prompt) for m in MEMBERS).most_common(1)[0][0]

    data = json.loads(run_eval(*args, "--json").stdout)
    arbiter = next(row for row in data["results"] if row["method"] == "arbiter")
    assert arbiter["correct"] == sum(majority(item["prompt"]) == item["answer"] for item in ITEMS[:4])
    assert (arbiter["failed"], arbiter["fallback"]) == (0, 2)
    assert [(p["item"], p["kind"], p["prompt"]) for p in arbiter["problems"]] == [
        (2, "fallback", "What is 23 multiplied by 47? Give your final answer inside <…"),
        (3, "fallback", "What is 1001 minus 678? Give your final answer inside <answe…"),
    ]
    assert arbiter["problems"][1]["reason"] == unread


def test_an_item_every_member_failed_is_failed_for_every_row_and_never_correct(panel):
    lost = ITEMS[0]["prompt"]

    def unlucky(request):
        if request.user == lost:
            raise ValueError("lost")
        return member(request)

    for name in MEMBERS:
        panel.add(name, reply=unlucky)
    result = run_eval(*ALL_MEMBERS, "--limit", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for row in data["results"]:
        assert (row["failed"], row["fallback"]) == (1, 0), row["method"]
        assert [(p["item"], p["kind"]) for p in row["problems"]] == [(1, "failed")]
        assert row["items"] == 3
    by_method = {row["method"]: row for row in data["results"]}
    for name in MEMBERS:
        assert by_method[name]["correct"] == sum(is_right(name, item["prompt"]) for item in ITEMS[1:3])
    for method in ("oracle", "vote", "arbiter", "council"):
        assert by_method[method]["problems"][0]["reason"] == "every member failed"
    split = sum(len({member_answer(m, item["prompt"]) for m in MEMBERS}) > 1 for item in ITEMS[1:3])
    assert len(panel.calls("sim-judge")) == 4 + split  # two items, by the arbiter, the chair and the split vote


def test_max_concurrency_must_be_a_positive_whole_number(panel):
    for value in ("0", "abc", "-2", "1.5"):
        result = run_eval(*ALL_MEMBERS, "--max-concurrency", value)
        assert result.exit_code == 1, value
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("Error: max concurrency must be"), result.stderr
    assert panel.requests == []


def max_overlap(requests) -> int:
    """The most requests the provider was answering at once."""
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def test_max_concurrency_bounds_calls_across_items_and_methods(panel):
    for name in MEMBERS + ["sim-judge"]:
        panel.add(name, reply=judge if name == "sim-judge" else member, latency=0.2)
    result = run_eval(*ALL_MEMBERS, "--limit", "3", "--methods", "arbiter", "--max-concurrency", "2")
    assert result.exit_code == 0, result.output
    assert len(panel.requests) == 12 and max_overlap(panel.requests) == 2

    # the default is the consortium's own setting
    store.save_config("one-at-a-time", {"models": MEMBERS, "arbiter": "sim-judge", "max_concurrency": 1})
    result = run_eval("--consortium", "one-at-a-time", "--limit", "5", "--methods", "arbiter")
    assert result.exit_code == 0, result.output
    assert len(panel.requests) == 12 + 8  # the members' answers to items 1-3 and their judgements were cached
    calls = sorted(panel.requests[12:], key=lambda r: r.started)
    assert all(earlier.finished <= later.started for earlier, later in zip(calls, calls[1:]))


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


def test_sample_flag_uses_the_shipped_dataset(panel):
    result = CliRunner().invoke(eval_command, ["--sample", *ALL_MEMBERS, "--arbiter", "sim-judge", "--methods",
                                               "vote", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dataset"] == str(DATASET)
    for args in ([], ["--sample", str(DATASET)]):
        wrong = CliRunner().invoke(eval_command, [*args, *ALL_MEMBERS, "--arbiter", "sim-judge"])
        assert wrong.exit_code == 2 and "Give a DATASET file or --sample" in wrong.stderr
