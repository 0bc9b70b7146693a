"""llm_consortium.core.answers: normalisation, extraction, the majority vote, is_correct."""

import json
from pathlib import Path

import pytest

from llm_consortium.core.answers import (
    Tally, extract_answer, is_correct, normalise_answer, tally, without_answer_tags, written_answer,
)
from llm_consortium.core.ballots import parse_ballot

SAMPLE_EVAL = Path(__file__).resolve().parent.parent / "llm_consortium" / "evaluation" / "data" / "sample-eval.jsonl"


# ---------------------------------------------------------------- normalise


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1,234.50", "1234.5"),
        ("$12", "12"),
        ("12 dollars", "12"),
        ("12 km", "12"),
        ("12%", "12"),
        ("12 percent", "12"),
        ("3.0", "3"),
        ("-0.50", "-0.5"),
        ("\u22125", "-5"),  # unicode minus sign
        ("-$3.50", "-3.5"),
        ("+4", "4"),
        ("0.0", "0"),
        ("-0", "0"),
        ("1e3", "1000"),
        ("2.5E-2", "0.025"),
        ("1/2", "1/2"),
        ("1 / 2", "1/2"),
        ("-3/4 cup", "-3/4"),
        ("x = 7", "7"),
        ("**42**", "42"),
        ("42.", "42"),
        ("€12", "12"),
        ("$\\frac{1}{2}$", "1/2"),
        ("\\text{100}", "100"),
    ],
)
def test_normalise_numbers(raw, expected):
    assert normalise_answer(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("b.", "B"),
        ("(b)", "B"),
        ("Option B", "B"),
        ("option c: Rome", "C"),
        ("Choice (D)", "D"),
        ("B) Paris", "B"),
        ("(C) Paris", "C"),
        ("B. Paris", "B"),
        ("A", "A"),
        ("a", "A"),
        ("J", "J"),
        ("**C**", "C"),
    ],
)
def test_normalise_letters(raw, expected):
    assert normalise_answer(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [("K", "k"), ("a cat", "cat"), ("A cat.", "cat"), ("Bob", "bob"), ("b cat", "b cat")],
)
def test_normalise_not_letters(raw, expected):
    assert normalise_answer(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes.", "yes"),
        ("yes", "yes"),
        ("YES!", "yes"),
        ("No", "no"),
        ("yes, because the sum is even", "yes"),
        ("No - it is odd", "no"),
        ("no one knows", "no one knows"),
        ("Nothing", "nothing"),
        ("yes, " + "word " * 20, "yes " + " ".join(["word"] * 20)),
    ],
)
def test_normalise_yes_no(raw, expected):
    assert normalise_answer(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("a cat", "cat"),
        ("An apple", "apple"),
        ("  Hello,   WORLD  ", "hello world"),
        ("\uff30\uff41\uff52\uff49\uff53", "paris"),  # full-width letters, NFKC
        ("“Paris”", "paris"),
        ("well-known", "well known"),
        ("2 cats and 3 dogs", "2 cats and 3 dogs"),
        ("Don't stop", "dont stop"),
    ],
)
def test_normalise_phrases(raw, expected):
    assert normalise_answer(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "...", "!?", "**"])
def test_normalise_empty_is_none(raw):
    assert normalise_answer(raw) is None


@pytest.mark.parametrize("raw", ["1,234.50", "B) Paris", "Yes.", "The Eiffel Tower", "$12", "1/2"])
def test_normalise_is_idempotent(raw):
    once = normalise_answer(raw)
    assert normalise_answer(once) == once


# ------------------------------------------------------------------ extract


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Reasoning...\n<answer>42</answer>", "42"),
        ("<ANSWER> (C) </Answer>", "C"),
        ("first <answer>1</answer> then I changed my mind <answer>2</answer>", "2"),
        ("<answer>\n$1,234.50\n</answer>", "1234.5"),
        ("<answer>The answer is 17.</answer>", "17"),
        ("I use <answer></answer> tags.\n<answer>B</answer>\nThe tag above is <answer></answer>", "B"),
        ("Long reasoning.\n<answer>12 km", "12"),  # unclosed final tag
        ("<answer>5</answer> although the answer is 7", "5"),  # block beats markers
    ],
)
def test_extract_from_answer_block(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Let me compute step by step: 3 + 4 = 7.\nAnswer: 7", "7"),
        ("We add the numbers carefully and check.\nFinal answer: $1,200", "1200"),
        ("Working shown above in great detail.\n**Answer:** B) Paris", "B"),
        ("Working shown above in great detail.\n**Final Answer**: 3.50", "3.5"),
        ("Working shown above in great detail.\n**Final Answer:**\n\n42\n", "42"),
        ("We compute many things in this text.\nThe answer is 17. Because reasons.", "17"),
        ("Thinking about all the options given here, the correct option is (D).", "D"),
        ("So the result is \\boxed{\\frac{3}{4}} after simplifying everything.", "3/4"),
        ("Answer: 3\nWait, I made an error in the second step.\nAnswer: 5", "5"),
        ("Answer: 3 and more words follow here. Then: \\boxed{9}", "9"),
    ],
)
def test_extract_from_markers(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Paris", "paris"),
        ("42", "42"),
        ("(B)", "B"),
        ("It is Paris.", "it is paris"),
    ],
)
def test_extract_short_text_whole(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "This is a long piece of prose with no marker at all, so nothing can be extracted.",
        "",
        "   ",
        "<answer></answer>",
    ],
)
def test_extract_returns_none(text):
    assert extract_answer(text) is None


def test_extract_never_raises_on_odd_text():
    odd = [
        "\\boxed{unclosed",
        "<answer>" * 5,
        "Answer:",
        "FINAL RANKING:\n1.",
        "1e99999999",
        "\x00\x01",
        "}" * 100,
        "answer is",
        "<answer>" * 5000,  # hostile repetitions must stay fast (linear scans)
        "\\boxed{" * 5000,
        "Answer:\n" * 5000,
    ]
    for text in odd:
        extract_answer(text)
        normalise_answer(text)
        parse_ballot(text, ["Response A", "Response B"])


# ------------------------------------------------------- as a member wrote it


@pytest.mark.parametrize(
    "text, written",
    [
        ("Six sevens. <answer>42.0 km</answer>", "42.0 km"),
        ("Working shown above in great detail.\n**Answer:** B) Paris", "B) Paris"),
        ("We compute many things in this text.\nThe answer is 17. Because reasons.", "17"),
        ("  It is Paris.  ", "It is Paris."),
        ("I count three: st-r-awbe-r-r-y.", "I count three: st-r-awbe-r-r-y."),
        ("This is a long piece of prose with no marker at all, so nothing can be extracted.", None),
    ],
)
def test_written_answer_is_what_extraction_normalises(text, written):
    assert written_answer(text) == written
    assert extract_answer(text) == (None if written is None else normalise_answer(written))


@pytest.mark.parametrize(
    "text, shown",
    [
        ("<answer>Paris</answer>", "Paris"),
        ("Surely < Answer >Paris</ANSWER > it is.", "Surely Paris it is."),
        ("Open <answer>Paris", "Open Paris"),
        ("No tags here, a < b.", "No tags here, a < b."),
    ],
)
def test_without_answer_tags(text, shown):
    assert without_answer_tags(text) == shown


def test_without_answer_tags_is_linear_on_hostile_text():
    import time

    start = time.perf_counter()
    without_answer_tags("<answer>" * 200_000 + "< " * 200_000 + "<answer " * 200_000)
    assert time.perf_counter() - start < 1


# -------------------------------------------------------------------- tally


def test_tally_clear_winner_counts_none_in_share():
    result = tally(["42", "42", "41", None])
    assert result == Tally(winner="42", share=0.5, counts={"42": 2, "41": 1}, tie=False, extracted=3)
    assert list(result.counts) == ["42", "41"]


def test_tally_tie_has_no_winner():
    result = tally(["A", "B", "A", "B", "C"])
    assert result.winner is None
    assert result.tie is True
    assert result.share == 0.0
    assert result.counts == {"A": 2, "B": 2, "C": 1}
    assert result.extracted == 5


def test_tally_tie_below_first_is_not_a_tie():
    result = tally(["A", "A", "B", "C"])
    assert result.winner == "A" and not result.tie and result.share == 0.5


def test_tally_empty_and_all_none():
    assert tally([]) == Tally(winner=None, share=0.0, counts={}, tie=False, extracted=0)
    result = tally([None, None])
    assert result.winner is None and result.extracted == 0 and not result.tie


def test_tally_unanimous():
    result = tally(["7", "7", "7"])
    assert result.winner == "7" and result.share == 1.0


# --------------------------------------------------------------- is_correct


@pytest.mark.parametrize(
    "predicted, expected, result",
    [
        ("1234.5", "1,234.50", True),
        ("$12", "12", True),
        ("0.5", "1/2", True),
        ("2/4", "1/2", True),
        ("3", "3.0000000001", True),
        ("3", "3.1", False),
        ("(b)", "B", True),
        ("C", "B", False),
        ("The Eiffel Tower", "eiffel tower", True),
        ("Yes.", "yes", True),
        (None, "42", False),
        ("", "42", False),
        ("1/0", "1/0", True),  # not a number: compared as text, never raises
    ],
)
def test_is_correct(predicted, expected, result):
    assert is_correct(predicted, expected) is result


# ------------------------------------------------------------- sample data


def test_sample_eval_dataset():
    lines = SAMPLE_EVAL.read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    assert len(items) >= 30
    letters = 0
    for item in items:
        assert set(item) == {"prompt", "answer"}
        assert item["prompt"].endswith("Give your final answer inside <answer></answer>.")
        normal = normalise_answer(item["answer"])
        assert normal is not None
        assert normalise_answer(normal) == normal
        assert is_correct(item["answer"], item["answer"])
        assert extract_answer(f"<answer>{item['answer']}</answer>") == normal
        if normal in {"A", "B", "C", "D"}:
            letters += 1
            for option in "ABCD":
                assert f"\n{option}) " in item["prompt"]
    assert 10 <= letters <= len(items) - 10
