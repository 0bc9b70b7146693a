"""A calibrated probability of being right: ``eval --calibrate`` fits a
monotone map per method on labelled items and stores it with the saved
consortium; its runs then show p(right), and ``--min-p`` acts on it. The
end-to-end parts run llm's real CLI against the loopback simulator, with
simulated members of known accuracy (evaluation/simeval.py)."""

import json
import random

import pytest

from helpers import invoke
from llm_consortium.core import calibrated, outcome
from llm_consortium.evaluation import calibration
from llm_consortium.evaluation.evaluate import read_dataset, sample_path
from llm_consortium.evaluation.simeval import SimulatedPanel
from llm_consortium.storage import store

ITEMS = read_dataset(sample_path())
TRUTH = {item.prompt: item.answer for item in ITEMS}
ACCURACY = {"sim-strong": 0.9, "sim-middle": 0.7, "sim-weak": 0.5}
SAVE = ["consortium", "save", "trio", "-m", "sim-strong", "-m", "sim-middle", "-m", "sim-weak",
        "--arbiter", "sim-judge", "--method", "vote", "--max-iterations", "1"]


# The fitting code, on numbers


def test_pav_pools_violators_into_a_non_decreasing_map():
    points = calibration.pav([0.1, 0.2, 0.3, 0.4, 0.5, 0.5], [1, 0, 0, 1, 1, 0])
    # 0.1-0.3 pool to 1/3; at 0.4 one right; the two at 0.5 (one right) pool with it to 2/3
    assert points == [[0.1, pytest.approx(1 / 3)], [0.3, pytest.approx(1 / 3)], [0.4, pytest.approx(2 / 3)],
                      [0.5, pytest.approx(2 / 3)]]
    ys = [p for _, p in points]
    assert ys == sorted(ys)
    assert calibrated.interpolate(points, 0.0) == pytest.approx(1 / 3)  # flat beyond the ends
    assert calibrated.interpolate(points, 0.35) == pytest.approx(0.5)  # linear between blocks
    assert calibrated.interpolate(points, 0.9) == pytest.approx(2 / 3)


def test_pav_of_already_monotone_data_keeps_every_step():
    assert calibration.pav([0.0, 0.5, 1.0], [0, 0.5, 1]) == [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]


def test_logistic_fit_finds_the_signal_and_ignores_the_noise():
    rng = random.Random(3)
    features, ys = [], []
    for _ in range(2000):
        a, c = rng.random(), rng.uniform(0.85, 0.95)
        features.append((a, c))
        ys.append(float(rng.random() < calibrated.sigmoid(-2 + 5 * a)))
    b0, b1, b2 = calibration.fit_logistic(features, ys)
    assert 4 < b1 < 6  # agreement carries it
    assert abs(b0 + b2 * 0.9 - -2) < 0.5  # confidence without spread adds only a constant


def test_held_out_predictions_never_see_their_own_label():
    rng = random.Random(5)
    a = [rng.choice([1 / 3, 2 / 3, 1.0]) for _ in range(60)]
    c = [rng.uniform(0.85, 0.95) for _ in range(60)]
    y = [rng.random() < x for x in a]
    for kind in calibration.SCORES:
        before = calibration.out_of_fold(kind, a, c, y)
        flipped = y[:]
        flipped[7] = not flipped[7]
        after = calibration.out_of_fold(kind, a, c, flipped)
        assert after[7] == before[7]  # item 7's p(right) comes from a map fitted without it
        assert after != before  # the other folds' maps did see it


def test_saturated_confidence_is_miscalibrated_and_agreement_calibrates():
    """The benchmark's world, small: confidence 0.85-0.95 whatever the truth,
    agreement tracking correctness."""
    rng = random.Random(11)
    agreement, confidence, correct = [], [], []
    for _ in range(600):
        a = rng.choice([1 / 3, 2 / 3, 1.0])
        agreement.append(a)
        confidence.append(rng.uniform(0.85, 0.95))
        correct.append(rng.random() < {1 / 3: 0.2, 2 / 3: 0.6, 1.0: 0.95}[a])
    fit = calibration.fit_method("vote", correct, confidence, agreement)
    assert fit.before["confidence"].value > 0.15
    assert fit.after[fit.score].value < 0.05
    assert fit.after[fit.score].interval[1] < 0.05  # (an ECE near 0 resamples above it: the interval may not hold it)
    assert fit.before["confidence"].interval[0] > 0.15
    assert fit.score == "agreement"  # the confidence is noise: adding it makes a worse forecast
    assert calibrated.p_right(fit.map, 1.0, 0.9) == pytest.approx(0.95, abs=0.05)
    assert calibrated.p_right(fit.map, 1 / 3, 0.9) == pytest.approx(0.2, abs=0.08)
    assert calibrated.p_right(fit.map, None, 0.9) is None


def test_the_combination_is_kept_when_the_confidence_carries_signal():
    rng = random.Random(13)
    agreement, confidence, correct = [], [], []
    for _ in range(800):
        a, c = rng.choice([0.4, 0.6, 0.8, 1.0]), rng.uniform(0.5, 1.0)
        agreement.append(a)
        confidence.append(c)
        correct.append(rng.random() < calibrated.sigmoid(-12 + 4 * a + 10 * c))
    fit = calibration.fit_method("arbiter", correct, confidence, agreement)
    assert fit.score == "logistic" and fit.brier["logistic"] < fit.brier["agreement"]
    assert fit.map["weights"][2] > 5
    assert calibrated.p_right(fit.map, 0.8, 0.95) > calibrated.p_right(fit.map, 0.8, 0.6)


def test_min_p_counts_an_unknown_p_right_as_not_confident_enough():
    assert outcome.min_p_note(0.5, None) == ("not confident enough: p(right) unknown (agreement was not "
                                              "measured), below the minimum of 0.50")
    assert outcome.below_min_p(0.5, None) and outcome.below_min_p(0.5, 0.49)
    assert not outcome.below_min_p(0.5, 0.5) and not outcome.below_min_p(None, 0.1)
    assert outcome.exit_code("below_threshold", False, True, doubtful=True) == 3
    assert outcome.exit_code("below_threshold", False, True) == 0


def test_too_few_items_are_not_calibrated():
    fit = calibration.fit_method("vote", [True] * 5, [0.9] * 5, [1.0] * 5)
    assert fit.map is None and "fewer than the 20 needed" in fit.skipped
    assert calibration.stored([fit], ["a"], "j") is None


def test_a_map_applies_only_to_its_members_arbiter_and_method():
    fitted = {"score": "agreement", "points": [[0.5, 0.4], [1.0, 0.9]], "items": 30}
    stored = {"fingerprint": calibrated.fingerprint(["a", "b:2"], "j"), "methods": {"vote": fitted}}
    assert calibrated.for_run(stored, ["b:2", "a"], "j", "vote")[0] == fitted  # the order is no matter
    assert calibrated.for_run(stored, ["a", "b"], "j", "vote") == (
        None, "its calibration was fitted for other members or another arbiter")
    assert calibrated.for_run(stored, ["a", "b:2"], "k", "vote")[0] is None
    assert calibrated.for_run(stored, ["a", "b:2"], "j", "arbiter") == (
        None, "its calibration has no map for the arbiter method")
    assert calibrated.for_run(None, ["a"], "j", "vote") == (None, "the consortium has no calibration")


@pytest.mark.parametrize("broken", [
    [1, 2], {"fingerprint": calibrated.fingerprint(["a"], "j")},
    {"fingerprint": calibrated.fingerprint(["a"], "j"), "methods": {"vote": {"score": "agreement"}}},
    {"fingerprint": calibrated.fingerprint(["a"], "j"),
     "methods": {"vote": {"score": "agreement", "points": [[0.5, "x"]], "items": 3}}},
    {"fingerprint": calibrated.fingerprint(["a"], "j"),
     "methods": {"vote": {"score": "logistic", "points": [[0.5, 0.5]], "items": 3, "weights": [1, 2]}}},
    {"fingerprint": calibrated.fingerprint(["a"], "j"),
     "methods": {"vote": {"score": "agreement", "points": [[0.5, 7]], "items": 3}}},
])
def test_a_map_that_cannot_be_read_is_not_applied(broken):
    assert calibrated.for_run(broken, ["a"], "j", "vote") == (None, "its calibration cannot be read")


def test_a_map_whose_numbers_are_written_as_text_is_read_as_numbers():
    stored = {"fingerprint": calibrated.fingerprint(["a"], "j"), "methods": {"vote": {
        "score": "logistic", "points": [["1", "0.9"], ["0", "0.1"]], "items": "30", "weights": ["0", "1", "0"]}}}
    fitted, why = calibrated.for_run(stored, ["a"], "j", "vote")
    assert why is None and fitted["items"] == 30
    assert calibrated.p_right(fitted, 1.0, 0.5) == pytest.approx(0.1 + 0.8 * calibrated.sigmoid(1.0))


# Through the real CLI, against the simulator


@pytest.fixture
def trio(sim):
    """Three simulated members (right 90, 70, 50 % of the time), a judge
    saturated at 0.9, saved as the vote consortium 'trio'."""
    panel = SimulatedPanel(TRUTH, ACCURACY)
    panel.add_to(sim)
    assert invoke(*SAVE).exit_code == 0
    sim.panel = panel
    return sim


def disagreeing(panel) -> str:
    """A prompt the members will answer differently when next asked (each
    member's answer is a fixed draw per prompt and how many times it was asked)."""
    for item in ITEMS:
        asked = {m: max((n for (model, _, user), n in panel.asked.items() if (model, user) == (m, item.prompt)),
                        default=0) for m in ACCURACY}
        if len({panel.answer(m, item.prompt, asked[m] + 1) for m in ACCURACY}) > 1:
            return item.prompt


def calibrate(*extra):
    return invoke("consortium", "eval", "--sample", "--consortium", "trio", "--methods", "vote", "--samples", "1",
                  "--calibrate", *extra)


def test_calibrate_stores_a_map_with_the_consortium_and_reports_before_and_after(trio):
    result = calibrate()
    assert result.exit_code == 0, result.output
    assert "Calibrated p(right)" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("vote  before"))
    assert "confidence 0." in line and "after, held out: agreement 0." in line and f"{len(ITEMS)} items" in line
    assert line.count("(kept)") == 1
    assert "Calibration stored with trio: vote on 40 items" in result.stderr

    stored = store.load_calibration("trio")
    assert stored["fingerprint"] == calibrated.fingerprint(list(ACCURACY), "sim-judge")
    vote = stored["methods"]["vote"]
    assert vote["items"] == len(ITEMS) and vote["score"] in calibration.SCORES
    ys = [p for _, p in vote["points"]]
    assert ys == sorted(ys)
    # the settings are untouched: list and show see no new key
    assert "calibration" not in store.load_config("trio")

    data = json.loads(calibrate("--json").stdout)
    fit = data["calibrated"][0]
    assert fit["method"] == "vote" and fit["items"] == 40
    assert set(fit["before"]) == {"confidence", "agreement"} and set(fit["after_held_out"]) == set(calibration.SCORES)


def test_runs_of_the_calibrated_consortium_show_p_right_and_min_p_acts_on_it(trio):
    assert calibrate().exit_code == 0
    fitted = store.load_calibration("trio")["methods"]["vote"]
    assert invoke("consortium", "default", "trio").exit_code == 0
    prompt = disagreeing(trio.panel)
    result = invoke("consortium", "run", prompt, "--json", "--no-raw")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)["metadata"]
    verdict = json.loads(result.stdout)["synthesis"]
    expected = calibrated.p_right(fitted, verdict["agreement"], verdict["confidence"])
    assert meta["p_right"] == pytest.approx(expected) and meta["calibrated_items"] == 40
    assert f"p(right) ≈ {expected:.2f} (calibrated on 40 items)" in result.stderr
    assert verdict["agreement"] < 1 and expected < 1  # the members disagree
    inspected = invoke("consortium", "inspect", meta["run_id"][:8]).stdout
    assert f"p(right) ≈ {expected:.2f} (calibrated on 40 items)" in inspected
    from llm_consortium.faces.web import pages

    page = str(pages.run_page(store.load_run(meta["run_id"]), None, [], "token"))
    assert f"<dt>Calibrated</dt><dd>p(right) ≈ {expected:.2f} (calibrated on 40 items)</dd>" in page

    # above every p(right): printed, marked, exit 3 from llm consortium
    prompt = disagreeing(trio.panel)
    doubtful = invoke("consortium", "run", prompt, "--min-p", "1", "--no-raw", "--json")
    assert doubtful.exit_code == 3
    result = json.loads(doubtful.stdout)
    p = result["metadata"]["p_right"]
    assert p < 1 and result["synthesis"]["synthesis"]  # the answer is given
    assert result["metadata"]["status"] == "below_threshold"
    assert "Status: below_threshold" in doubtful.stderr
    assert f"Not confident enough: p(right) ≈ {p:.2f}, below the minimum of 1.00." in doubtful.stderr
    assert invoke("consortium", "run", disagreeing(trio.panel), "--min-p", "0", "--no-raw").exit_code == 0

    # under llm -m: the status and the note; llm decides the exit status
    prompt = disagreeing(trio.panel)
    logged = invoke("-m", "trio", prompt, "-o", "min_p", "1")
    assert logged.exit_code == 0 and logged.stdout.strip()
    last = json.loads(invoke("logs", "--json", "-n", "1").stdout)[0]["response_json"]["metadata"]
    assert last["status"] == "below_threshold" and last["p_right"] < 1
    assert any(note.startswith("not confident enough") for note in last["notes"])


def test_min_p_without_a_calibration_is_a_usage_error_before_any_call(trio):
    assert invoke("consortium", "default", "trio").exit_code == 0
    for args in (["consortium", "run", ITEMS[0].prompt, "--min-p", "0.5"],
                 ["-m", "trio", ITEMS[0].prompt, "-o", "min_p", "0.5"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert "min p needs a calibrated consortium, and the consortium has no calibration" in result.stderr
        assert "llm consortium eval DATA --consortium NAME --calibrate" in result.stderr
    assert trio.requests == []
    assert "between 0 and 1" in invoke("-m", "trio", "q", "-o", "min_p", "1.5").stderr


def test_changing_the_members_drops_the_map_with_a_note(trio):
    assert calibrate().exit_code == 0
    same = invoke("consortium", "save", "trio", "--max-iterations", "2")
    assert same.exit_code == 0 and "Note:" not in same.stderr
    assert store.load_calibration("trio") is not None  # a setting that changes no member keeps it
    method = invoke("consortium", "save", "trio", "--method", "arbiter")
    assert "Note: its calibration has no map for the arbiter method" in method.stderr
    changed = invoke("consortium", "save", "trio", "-m", "sim-strong", "-m", "sim-middle", "--method", "vote")
    assert changed.exit_code == 0
    assert ("Note: its calibration was dropped: the members or the arbiter changed "
            "(llm consortium eval DATA --consortium trio --calibrate)") in changed.stderr
    assert store.load_calibration("trio") is None
    assert "no calibration" in invoke("-m", "trio", ITEMS[0].prompt, "-o", "min_p", "0.5").stderr


def test_a_broken_stored_map_is_never_a_crash(trio):
    assert calibrate().exit_code == 0
    stored = store.load_calibration("trio")
    stored["methods"]["vote"]["points"] = "nonsense"
    store.save_calibration("trio", stored)
    result = invoke("-m", "trio", ITEMS[0].prompt)
    assert result.exit_code == 0 and result.stdout.strip()
    refused = invoke("-m", "trio", ITEMS[0].prompt, "-o", "min_p", "0.5")
    assert refused.exit_code == 1 and "its calibration cannot be read" in refused.stderr


def test_removing_the_consortium_removes_its_map(trio):
    assert calibrate().exit_code == 0
    assert invoke("consortium", "remove", "trio").exit_code == 0
    assert invoke(*SAVE).exit_code == 0  # the same name, members and arbiter: a new consortium, uncalibrated
    assert store.load_calibration("trio") is None


def test_calibrate_needs_the_saved_consortium_as_saved(trio):
    alone = invoke("consortium", "eval", "--sample", "-m", "sim-strong", "--arbiter", "sim-judge", "--calibrate")
    assert alone.exit_code == 2 and "--calibrate needs --consortium NAME" in alone.stderr
    changed = invoke("consortium", "eval", "--sample", "--consortium", "trio", "-m", "sim-strong", "--calibrate")
    assert changed.exit_code == 2 and "leave out -m and --arbiter" in changed.stderr
    few = calibrate("--limit", "5")
    assert few.exit_code == 1
    assert "No method could be calibrated, so nothing was stored with trio: vote: 5 items" in few.stderr
    assert store.load_calibration("trio") is None
