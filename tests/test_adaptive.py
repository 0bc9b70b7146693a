"""Adaptive panels (--adaptive): members are asked in stages, priced ones
cheapest first and then the unpriced in list order, and no one else is asked
once the leading answer is probably the whole panel's majority; agreement is
still counted over the whole panel ("2 of 5 agree, 3 not asked: decisive")
in the summary, --json, runs, inspect and the viewer. Driven through llm's
real CLI against the simulated provider; free text is grouped by a
deterministic embedding model registered by a test plugin through llm's own
``register_embedding_models`` hook, or by one grouping call to the arbiter."""

import json
import random
import re
import zlib

import llm
import pytest

from helpers import invoke
from llm_consortium.core.adaptive import majority_probability, next_stage_size
from llm_consortium.evaluation.simulator import arbiter_xml

pytest.importorskip("genai_prices")

# Listed most expensive first, so that asking in list order and asking cheapest first differ.
PRICED = {"m1": "gpt-4o", "m2": "gpt-4.1", "m3": "gpt-4.1-mini", "m4": "gpt-4o-mini", "m5": "gpt-4.1-nano"}
QUESTION = "What is six times seven?"
JUDGE = "gpt-3.5-turbo"  # the provider name the arbiter is priced as
GROUPING_MARK = "Do not answer it yourself"  # the grouping prompt's (templates/grouping.txt)


def members_args(names):
    return [arg for name in names for arg in ("-m", name)]


def five_priced(sim, reply="Six sevens. <answer>42</answer>", judge_reply=None):
    for name, priced_as in PRICED.items():
        sim.add(name, model_name=priced_as, reply=reply(name) if callable(reply) else reply)
    sim.add("judge", model_name=JUDGE, reply=judge_reply or arbiter_xml("<answer>42</answer>", 0.9))
    return ["consortium", QUESTION, *members_args(PRICED), "--arbiter", "judge"]


def asked(sim) -> list[str]:
    """The provider model names asked, in order."""
    return [request.model for request in sim.requests]


def run_json(*args):
    result = invoke(*args, "--json", "--no-raw")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


# The posterior


def test_two_of_two_agreeing_make_a_majority_of_five_95_percent_likely():
    # Beta(3, 1) on the rate of the leading answer; the 3 left need to give it once: 1 - P(none) = 1 - 1/20.
    assert majority_probability(2, 2, 5) == pytest.approx(0.95)
    assert majority_probability(1, 2, 5) == pytest.approx(0.5)  # 1-1: a coin toss
    assert majority_probability(3, 3, 5) == 1.0  # already a majority of the whole panel
    assert majority_probability(1, 4, 5) == 0.0  # can no longer become one
    assert majority_probability(2, 3, 5) > majority_probability(2, 4, 5)  # a dissent lowers it


def test_the_posterior_matches_a_monte_carlo_of_its_model():
    rng = random.Random(7)
    for leading, asked_, panel in ((2, 3, 7), (3, 4, 9), (1, 2, 4)):
        hits = 0
        for _ in range(40_000):
            rate = rng.betavariate(1 + leading, 1 + asked_ - leading)
            more = sum(rng.random() < rate for _ in range(panel - asked_))
            hits += (leading + more) * 2 > panel
        assert majority_probability(leading, asked_, panel) == pytest.approx(hits / 40_000, abs=0.01)


def test_the_next_stage_is_the_fewest_that_could_be_decisive():
    assert next_stage_size(1, 2, 5, 0.8) == 1  # 2 of 3 would give 0.80
    assert next_stage_size(1, 2, 5, 0.95) == 2  # 3 of 4 would give 1.0; 2 of 3 only 0.80
    assert next_stage_size(1, 2, 3, 0.99) == 1  # all that is left


# Stages, order, the whole-panel counts


def test_two_cheapest_agreeing_are_decisive_and_no_judge_is_asked(sim):
    data, result = run_json(*five_priced(sim), "--method", "vote", "--adaptive")
    assert sorted(asked(sim)) == ["gpt-4.1-nano", "gpt-4o-mini"]  # the two cheapest, at once
    meta = data["metadata"]
    assert meta["status"] == "success" and meta["decisive"] is True
    assert (meta["members"], meta["answered"], meta["agreeing"], meta["not_asked"]) == (5, 2, 2, 3)
    assert data["synthesis"]["synthesis"] == "42" and data["synthesis"]["confidence"] == pytest.approx(0.95)
    assert data["synthesis"]["agreement"] == pytest.approx(0.4)  # 2 of the whole 5
    assert {m["model"]: m["not_asked"] for m in data["model_responses"]} == {
        "m1": True, "m2": True, "m3": True, "m4": False, "m5": False}
    (note,) = [n for n in meta["notes"] if n.startswith("adaptive:")]
    assert "2 of 5 members asked in 1 stage" in note and "measured by short answers" in note
    summary = invoke(*five_priced(sim), "--method", "vote", "--adaptive", "--strict")
    assert summary.exit_code == 0, summary.stderr  # a decisive stop is a success
    assert "2 of 5 agree, 3 not asked: decisive (by short answers)" in summary.stderr
    assert "not asked (the adaptive panel stopped before it)" in summary.stderr


def test_stages_go_on_until_decisive_priced_cheapest_first_then_unpriced_in_list_order(sim):
    replies = {"gpt-4.1-nano": "<answer>41</answer>", "gpt-4o-mini": "<answer>42</answer>",
               "u1": "<answer>42</answer>", "u2": "<answer>42</answer>"}
    sim.add("u1", reply=replies["u1"])  # no model_name a price is known for
    sim.add("cheap", model_name="gpt-4.1-nano", reply=replies["gpt-4.1-nano"])
    sim.add("u2", reply=replies["u2"])
    sim.add("dear", model_name="gpt-4o-mini", reply=replies["gpt-4o-mini"])
    sim.add("judge", reply=arbiter_xml("<answer>42</answer>", 0.9))
    data, result = run_json("consortium", QUESTION, *members_args(["u1", "cheap", "u2", "dear"]), "--arbiter",
                            "judge", "--method", "vote", "--adaptive", "--confidence-threshold", "0.6")
    # A 1-1 tie, then one more (2 of 3 makes a majority of 4 60 % likely): the first unpriced, by list order.
    assert sorted(asked(sim)[:2]) == ["gpt-4.1-nano", "gpt-4o-mini"] and asked(sim)[2:] == ["u1"]
    meta = data["metadata"]
    assert meta["status"] == "success" and (meta["agreeing"], meta["not_asked"]) == (2, 1)
    assert "3 of 4 members asked in 2 stages" in " ".join(meta["notes"])
    assert [m["model"] for m in data["model_responses"] if m["not_asked"]] == ["u2"]


def test_a_member_that_fails_counts_against_the_lead_and_makes_the_run_partial(sim):
    args = five_priced(sim)
    sim.add("m5", model_name="gpt-4.1-nano", status=400, error_message="bad request")  # the cheapest fails
    data, result = run_json(*args, "--method", "vote", "--adaptive")
    # 1 of 2 asked gave 42 (0.5), then one more: 2 of 3 (0.80), decisive with two never asked.
    assert sorted(asked(sim)) == ["gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini"]
    meta = data["metadata"]
    assert meta["status"] == "partial" and meta["decisive"] and (meta["answered"], meta["not_asked"]) == (2, 2)
    assert "2 of 5 agree, 2 of 3 asked answered, 2 not asked: decisive" in result.stderr
    assert "1 of 5 members failed (m5#1)" in " ".join(meta["notes"])


def test_a_panel_that_never_decides_asks_everyone_and_judges_as_usual(sim):
    args = five_priced(sim, reply=lambda name: f"<answer>{ord(name[-1])}</answer>")  # five different answers
    data, _ = run_json(*args, "--method", "vote", "--adaptive", "--max-iterations", "1")
    assert len(sim.calls(JUDGE)) == 1  # the vote could not decide: the arbiter did
    meta = data["metadata"]
    assert meta["not_asked"] == 0 and meta["decisive"] is False and meta["members"] == 5
    assert "5 of 5 members asked" in " ".join(meta["notes"])


def test_the_arbiter_method_skips_the_arbiter_only_for_a_decisive_short_answer(sim):
    data, _ = run_json(*five_priced(sim), "--adaptive")
    assert sim.calls(JUDGE) == [] and data["synthesis"]["synthesis"] == "42"
    assert data["metadata"]["method"] == "arbiter" and data["metadata"]["status"] == "success"


def test_rejudging_an_adaptive_run_asks_no_member_and_keeps_the_not_asked(sim):
    data, _ = run_json(*five_priced(sim), "--method", "vote", "--adaptive")
    before = len(sim.requests)
    again = invoke("consortium", "rejudge", data["metadata"]["run_id"], "--method", "arbiter", "--json")
    assert again.exit_code == 0, again.stderr
    assert asked(sim)[before:] == [JUDGE]  # the arbiter alone: no member asked again
    meta = json.loads(again.stdout)["metadata"]
    assert (meta["members"], meta["answered"], meta["not_asked"], meta["decisive"]) == (5, 2, 3, False)


# Free text: embeddings, else one grouping call


class WordsEmbedding(llm.EmbeddingModel):
    """A deterministic bag of words: each lowercase word counted in one of 64 dimensions (crc32)."""

    model_id = "test-words"

    def embed_batch(self, texts):
        for text in texts:
            vector = [0.0] * 64
            for word in re.findall(r"[a-z]+", text.lower()):
                vector[zlib.crc32(word.encode()) % 64] += 1.0
            yield vector


class BrokenEmbedding(llm.EmbeddingModel):
    model_id = "test-broken"

    def embed_batch(self, texts):
        raise RuntimeError("embedding server down")


class EmbeddingPlugin:
    __name__ = "test-embedding-plugin"

    @llm.hookimpl
    def register_embedding_models(self, register):
        register(WordsEmbedding())
        register(BrokenEmbedding())


@pytest.fixture
def embedding_model():
    plugin = EmbeddingPlugin()
    llm.plugins.pm.register(plugin, name="test-embedding-plugin")
    yield "test-words"
    llm.plugins.pm.unregister(plugin)


FREE_TEXT = {  # no marker and more than six words: no short answer can be read
    "m5": "Paris has been the capital city of France for centuries now.",
    "m4": "For centuries now the capital city of France has been Paris.",
    "m3": "Lyon would be my guess for the capital city of that country.",
}


def free_text_panel(sim, judge_reply):
    args = five_priced(sim, reply=lambda name: FREE_TEXT.get(name, FREE_TEXT["m5"]), judge_reply=judge_reply)
    args[1] = "What is the capital of France?"
    return args


def test_free_text_is_grouped_by_the_named_embedding_model_and_the_arbiter_writes_the_synthesis(
        sim, embedding_model):
    data, result = run_json(*free_text_panel(sim, arbiter_xml("Paris.", 0.9)), "--adaptive", "--embed",
                            embedding_model)
    assert sorted(asked(sim)) == sorted(["gpt-4.1-nano", "gpt-4o-mini", JUDGE])
    (judging,) = sim.calls(JUDGE)
    assert GROUPING_MARK not in judging.text  # the arbiter was asked for a synthesis, not for groups
    meta = data["metadata"]
    assert meta["status"] == "success" and meta["decisive"] and meta["not_asked"] == 3
    assert "measured by embeddings (test-words)" in " ".join(meta["notes"])
    assert data["synthesis"]["synthesis"] == "Paris."


def test_embeddings_below_the_similarity_threshold_are_different_answers(sim, embedding_model):
    sim.add("m5", model_name="gpt-4.1-nano", reply=FREE_TEXT["m5"])
    sim.add("m4", model_name="gpt-4o-mini", reply=FREE_TEXT["m3"])  # Lyon: unlike m5's
    sim.add("m3", model_name="gpt-4.1-mini", reply=FREE_TEXT["m4"])
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    data, _ = run_json("consortium", "Capital of France?", *members_args(["m3", "m4", "m5"]), "--arbiter", "judge",
                       "--adaptive", "--embed", embedding_model, "--embed-threshold", "0.95", "--confidence-threshold", "0.6")
    assert len([m for m in asked(sim) if m != "judge"]) == 3  # the first two differed: the third was asked


def test_without_an_embedding_model_one_grouping_call_measures_free_text(sim):
    def judge(request):
        if GROUPING_MARK in request.text:
            return "<groups>\nResponse A, Response B\n</groups>"
        return arbiter_xml("Paris.", 0.9)

    data, _ = run_json(*free_text_panel(sim, judge), "--adaptive")
    calls = sim.calls(JUDGE)
    assert len(calls) == 2 and GROUPING_MARK in calls[0].text and GROUPING_MARK not in calls[1].text
    meta = data["metadata"]
    assert meta["decisive"] and meta["not_asked"] == 3
    assert "measured by a grouping call to the arbiter" in " ".join(meta["notes"])
    # The grouping call is paid for and recorded like any other call of the round.
    assert data["iterations"][0]["usage"]["total"] > sum(m["tokens"]["total"] for m in data["model_responses"])


def test_a_decisive_panel_whose_judge_is_unsure_follows_the_stop_rule(sim):
    """Free text needs the arbiter's synthesis; a decisive panel does not make
    its low confidence a success: the stop rule decides, as without --adaptive."""
    def judge(request):
        if GROUPING_MARK in request.text:
            return "<groups>\nResponse A, Response B\n</groups>"
        return arbiter_xml("Paris, perhaps.", 0.3)

    data, _ = run_json(*free_text_panel(sim, judge), "--adaptive", "--max-iterations", "2")
    meta = data["metadata"]
    assert meta["iteration_count"] == 2  # asked again, as any run below its threshold
    assert meta["status"] == "below_threshold"
    assert meta["threshold_note"].startswith("confidence 0.30 below the")


def test_an_embedding_model_that_fails_is_a_note_and_the_grouping_call_measures_instead(sim, embedding_model):
    def judge(request):
        if GROUPING_MARK in request.text:
            return "<groups>\nResponse A, Response B\n</groups>"
        return arbiter_xml("Paris.", 0.9)

    data, _ = run_json(*free_text_panel(sim, judge), "--adaptive", "--embed", "test-broken")
    (note,) = [n for n in data["metadata"]["notes"] if n.startswith("adaptive:")]
    assert "measured by a grouping call to the arbiter" in note
    assert "the embedding model test-broken failed: RuntimeError: embedding server down" in note
    assert data["metadata"]["decisive"] and len(sim.calls(JUDGE)) == 2


# Mistakes refused before any call


@pytest.mark.parametrize("extra, message", [
    (["--method", "council"], "Error: --adaptive works with the vote and arbiter methods, not council"),
    (["--quorum", "2"], "Error: --adaptive and --quorum cannot be combined: each decides when to stop asking"),
    (["--embed", "no-such-embedder"], "Error: Unknown embedding model: no-such-embedder (see 'llm embed-models')"),
])
def test_refused_in_one_line_before_any_call(sim, extra, message):
    result = invoke(*five_priced(sim), "--adaptive", *extra)
    assert result.exit_code == 1 and result.stderr.splitlines() == [message]
    assert sim.requests == []


# Saved, and -o adaptive 1


def test_saved_adaptive_and_the_option_on_a_saved_consortium(sim):
    args = five_priced(sim)
    saved = invoke("consortium", "save", "fast", *members_args(PRICED), "--arbiter", "judge", "--method", "vote",
                   "--adaptive")
    assert saved.exit_code == 0, saved.stderr
    assert invoke("-m", "fast", QUESTION).output.strip() == "42"
    assert len(sim.requests) == 2
    assert invoke("consortium", "save", "full", *members_args(PRICED), "--arbiter", "judge", "--method",
                  "vote").exit_code == 0
    assert invoke("-m", "full", QUESTION, "-o", "adaptive", "1").exit_code == 0
    assert len(sim.requests) == 4
    assert invoke("-m", "fast", QUESTION, "-o", "adaptive", "0").exit_code == 0
    assert len(sim.requests) == 9  # the whole panel
    assert args  # the panel's models exist for every run


# --max-cost


def test_a_stage_that_would_cross_the_budget_is_not_started(sim):
    # The prompt's one-letter words take twice the tokens the budget estimates (4 characters a token), so
    # the first stage costs more than planned: 2 x $0.05 where the whole round was planned at about $0.15.
    # Before the next stage (the last two members: $0.025 and $0.05 as estimated, and the arbiter's
    # shortest reply) the run stands at $0.10: that stage would pass the $0.16, and is not started.
    prompt = "a " * 20000 + "Which letter?"
    for name, priced_as, answer in (("k1", "gpt-4o", "A"), ("k2", "gpt-4o-2024-08-06", "B"),
                                    ("k3", "gpt-4o-2024-11-20", "C"), ("k4", "gpt-4o-2024-05-13", "D")):
        sim.add(name, model_name=priced_as, reply=f"<answer>{answer}</answer>")
    sim.add("judge", model_name="gpt-4.1-nano", reply=arbiter_xml("<answer>A</answer>", 0.9))
    data, result = run_json("consortium", prompt, *members_args(["k1", "k2", "k3", "k4"]), "--arbiter", "judge",
                            "--method", "vote", "--adaptive", "--max-iterations", "1", "--max-cost", "0.16")
    meta = data["metadata"]
    assert meta["status"] == "budget" and meta["stopped_because"].startswith("stage 2 of round 1 (k3#1, k4#1)")
    assert "past the max cost of $0.16" in meta["stopped_because"]
    # The two members of stage 1 (asked at once, in either order), then the arbiter.
    assert sorted(asked(sim)[:2]) == ["gpt-4o", "gpt-4o-2024-08-06"] and asked(sim)[2:] == ["gpt-4.1-nano"]
    assert (meta["not_asked"], meta["decisive"]) == (2, False) and meta["usage"]["cost_usd"] <= 0.16
    assert "1 of 4 agree, 2 not asked (by short answers)" in result.stderr  # not "decisive"


# runs, inspect, the viewer


def test_runs_inspect_and_the_viewer_count_the_whole_panel(sim):
    data, _ = run_json(*five_priced(sim), "--method", "vote", "--adaptive")
    run_id = data["metadata"]["run_id"]
    inspect = invoke("consortium", "inspect", run_id)
    assert "Panel: 2 of 5 agree, 3 not asked: decisive" in inspect.output
    assert "Adaptive: 2 of 5 members asked in 1 stage" in inspect.output
    (row,) = json.loads(invoke("consortium", "runs", "--json").output)
    assert (row["members"], row["agreeing"], row["not_asked"], row["decisive"]) == (5, 2, 3, True)
    assert row["status"] == "success" and row["threshold_note"] is None
    runs = invoke("consortium", "runs").output
    assert "adaptive: 2 of 5 members asked" in runs

    from llm_consortium.faces.web import pages
    from llm_consortium.storage import store

    page = str(pages.run_page(store.load_run(run_id), None, [], "token"))
    assert "2 of 5 agree, 3 not asked: decisive" in page
    assert re.search(r'<span class="badge badge-not-asked">not asked</span> (m\d #1, ){2}m\d #1: the adaptive panel '
                     r'stopped before them', page)
    listing = str(pages.runs_page(store.list_runs(), store.run_facets(), {"q": "", "consortium": "", "method": "",
                                                                          "status": ""}, pages.Paging(1, 50, 1)))
    assert "2 of 5 agree, 3 not asked: decisive" in listing


# --min-p: a calibrated p(right) below the minimum asks more members first


def test_under_min_p_an_adaptive_panel_asks_more_members_before_it_stops(sim):
    from llm_consortium.core import calibrated
    from llm_consortium.storage import store

    five_priced(sim)
    saved = invoke("consortium", "save", "fast", *members_args(PRICED), "--arbiter", "judge", "--method", "vote",
                   "--adaptive")
    assert saved.exit_code == 0, saved.stderr
    # Fitted (by hand here) so that 2 of 5 agreeing is right half the time, 3 of 5 nine times in ten.
    fitted = {"score": "agreement", "points": [[0.4, 0.5], [0.6, 0.9], [1.0, 0.95]], "items": 100,
              "date": "2026-12-06"}
    store.save_calibration("fast", {"fingerprint": calibrated.fingerprint(list(PRICED), "judge"),
                                    "methods": {"vote": fitted}})
    plain = invoke("-m", "fast", QUESTION)
    assert plain.exit_code == 0 and len(sim.requests) == 2  # decisive at 2 of 2: p(right) 0.50, shown
    sim.requests.clear()
    doubting = invoke("-m", "fast", QUESTION, "-o", "min_p", "0.8")
    assert doubting.exit_code == 0 and doubting.output.strip() == "42"
    assert len(sim.requests) == 3  # one more member, then 3 of 5 agree: p(right) 0.90
    last = json.loads(invoke("logs", "--json", "-n", "1").stdout)[0]["response_json"]["metadata"]
    assert last["status"] == "success" and last["p_right"] == pytest.approx(0.9)
    assert (last["agreeing"], last["not_asked"]) == (3, 2)
