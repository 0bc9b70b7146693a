"""The eval report's statistics on constructed cases."""

import pytest

from llm_consortium.evaluation.evalreport import (
    Row, calibration, compare, error_correlation, recommendation, redundant_members,
)


def test_calibration_bins_on_a_constructed_case():
    confidences = [0.1, 0.15, 0.5, 0.55, 0.9, 0.95, 1.0, 1.0, None]
    correct = [False, True, True, False, True, True, True, False, True]
    result = calibration(confidences, correct, bins=5)
    assert result.items == 8  # the item without a confidence is left out
    counts = [(b.low, b.high, b.count) for b in result.bins]
    assert counts == [(0.0, 0.2, 2), (0.2, 0.4, 0), (0.4, 0.6, 2), (0.6, 0.8, 0), (0.8, 1.0, 4)]
    first, _, middle, _, last = result.bins
    assert (first.accuracy, first.mean_confidence) == (0.5, pytest.approx(0.125))
    assert (middle.accuracy, middle.mean_confidence) == (0.5, pytest.approx(0.525))
    assert (last.accuracy, last.mean_confidence) == (0.75, pytest.approx(0.9625))
    assert result.bins[1].accuracy is None
    # ECE: each bin's share of the items times its gap
    assert result.ece == pytest.approx(2 / 8 * 0.375 + 2 / 8 * 0.025 + 4 / 8 * 0.2125)


def test_calibration_of_a_perfectly_calibrated_and_of_an_unmeasured_signal():
    assert calibration([0.5, 0.5, 1.0, 1.0], [True, False, True, True]).ece == pytest.approx(0)
    assert calibration([None, None], [True, False]).ece is None


def test_error_correlation():
    a = [True, False, True, False]
    assert error_correlation(a, a) == pytest.approx(1)
    assert error_correlation(a, [not x for x in a]) == pytest.approx(-1)
    assert error_correlation(a, [True, True, False, False]) == pytest.approx(0)
    assert error_correlation(a, [True] * 4) is None  # never wrong: no variance


def member(name, correct):
    return Row(name, "member", correct=list(correct))


def test_members_that_are_never_the_only_one_right():
    rows = [member("a", [1, 1, 0, 0]), member("b", [1, 0, 1, 0]), member("c", [1, 1, 0, 0])]
    assert redundant_members(rows) == ["a", "c"]  # b alone is right on item 3; a and c cover each other
    assert redundant_members(rows[:2]) == []


def test_paired_bootstrap_interval_against_the_best_member():
    best = member("best", [1] * 8 + [0] * 2)
    same = Row("same", "method", correct=list(best.correct))
    better = Row("better", "method", correct=[1] * 10)
    rows = [best, member("weak", [0] * 5 + [1] * 5), same, better]
    assert compare(rows) is best
    assert best.interval == (0, 0) and best.difference == 0
    assert same.interval == (0, 0)  # the same answers on every item: paired, no spread at all
    assert better.difference == pytest.approx(0.2)
    low, high = better.interval
    assert 0 <= low < 0.2 < high <= 0.5  # right on the two items best misses; resamples may drop them
    assert recommendation(rows, best).startswith("Use best alone: no method is clearly more accurate")
    clearly = Row("clearly", "method", correct=[1] * 10)
    weak_best = member("best", [1] * 2 + [0] * 8)
    rows = [weak_best, clearly]
    compare(rows)
    assert clearly.interval[0] > 0
    assert recommendation(rows, weak_best).startswith("Use clearly: +80.0 points over best alone")
