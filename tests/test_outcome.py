"""One vocabulary of outcomes (core/outcome.py): a status per run, the notes
behind it, "k of n agree, m of n answered" beside the arbiter's confidence,
and exit statuses a script can trust. Driven through llm's real CLI."""

import json

from helpers import db_rows, invoke
from llm_consortium.evaluation.simulator import arbiter_xml

FIVE = ["consortium", "What is 6*7?", *[a for m in ("m1", "m2", "m3", "m4", "m5") for a in ("-m", m)],
        "--arbiter", "judge", "--no-raw"]


def five_members_three_failing(sim):
    for name in ("m1", "m2"):
        sim.add(name, reply="It is <answer>42</answer>")
    for name in ("m3", "m4", "m5"):
        sim.add(name, status=401, error_message="bad key")
    sim.add("judge", reply=arbiter_xml("42", 0.95, groups="Response A, Response B"))


def test_agreement_divides_by_the_whole_panel(sim):
    """2 of 5 alike with 3 failed was reported as agreement 1.00 (2 of the 2
    that answered), and --stop-on agreement stopped there as reached."""
    five_members_three_failing(sim)
    result = invoke(*FIVE, "--stop-on", "agreement", "--max-iterations", "2", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    meta = data["metadata"]
    assert data["synthesis"]["agreement"] == 0.4
    assert (meta["members"], meta["answered"], meta["agreeing"]) == (5, 2, 2)
    assert meta["iteration_count"] == 2  # 0.4 is not 0.8: it went round again
    assert meta["status"] == "partial"
    assert any(note.startswith("threshold not reached: agreement 0.40") for note in meta["notes"])
    assert any(note.startswith("3 of 5 members failed") for note in meta["notes"])


def test_partial_panel_is_not_a_success(sim):
    """One survivor of three was recorded as a success at confidence 1.00,
    with no "1 of 3" anywhere."""
    sim.add("m1", reply="It is 42.")
    sim.add("m2", status=400, error_message="no such thing")
    sim.add("m3", status=400, error_message="no such thing")
    sim.add("judge", reply=arbiter_xml("It is 42.", 1.0))
    run = ["consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge", "--no-raw"]
    result = invoke(*run)
    assert result.exit_code == 0 and result.stdout == "It is 42.\n"  # an answer is printed: 0
    assert "Confidence 1.00 · 1 of 3 agree, 1 of 3 answered" in result.stderr
    assert "Status: partial" in result.stderr and "2 of 3 members failed (m2#1, m3#1)" in result.stderr
    assert db_rows("select status, members, answered, agreeing from consortium_runs") == [
        {"status": "partial", "members": 3, "answered": 1, "agreeing": 1}]
    listed = json.loads(invoke("consortium", "runs", "--json").stdout)[0]
    assert listed["status"] == "partial" and listed["answered"] == 1 and listed["members"] == 3
    table = invoke("consortium", "runs").stdout
    assert "partial" in table and "1/3" in table
    shown = invoke("consortium", "inspect").stdout
    assert "partial" in shown and "Panel: 1 of 3 agree, 1 of 3 answered" in shown

    strict = invoke(*run, "--strict")
    assert strict.exit_code == 3 and strict.stdout == "It is 42.\n"


def test_below_threshold_is_its_own_status(panel):
    """`runs` listed a run that never reached its threshold as `success`."""
    panel.add("judge", reply=arbiter_xml("The answer is 42.", 0.5))
    run = ["consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--max-iterations", "1"]
    result = invoke(*run)
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    assert "Status: below_threshold" in result.stderr
    assert json.loads(invoke("consortium", "runs", "--json").stdout)[0]["status"] == "below_threshold"
    assert invoke(*run, "--strict").exit_code == 3


def test_success_exits_0_even_when_strict(panel):
    result = invoke("consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--strict", "--json")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout)["metadata"]
    assert meta["status"] == "success" and meta["notes"] == []
    assert (meta["members"], meta["answered"]) == (2, 2)


def test_strict_saved_and_as_an_option(panel):
    panel.add("judge", reply=arbiter_xml("The answer is 42.", 0.5))
    assert invoke("consortium", "save", "doubtful", "-m", "m1", "-m", "m2", "--arbiter", "judge",
                  "--max-iterations", "1", "--strict").exit_code == 0
    assert invoke("-m", "doubtful", "What is 6*7?").exit_code == 3
    assert invoke("consortium", "save", "lenient", "-m", "m1", "-m", "m2", "--arbiter", "judge",
                  "--max-iterations", "1").exit_code == 0
    plain = invoke("-m", "lenient", "What is 6*7?")
    assert plain.exit_code == 0 and plain.stdout == "The answer is 42.\n"
    assert invoke("-m", "lenient", "What is 6*7?", "-o", "strict", "1").exit_code == 3


def test_quorum_cancelled_members_are_not_counted(sim):
    """n is the panel less the members a --quorum cancelled: they did not fail."""
    sim.add("m1", reply="It is <answer>42</answer>")
    sim.add("m2", reply="It is <answer>42</answer>")
    sim.add("slow", reply="It is <answer>42</answer>", latency=5)
    sim.add("judge", reply=arbiter_xml("42", 0.9))
    result = invoke("consortium", "q", "-m", "m1", "-m", "m2", "-m", "slow", "--arbiter", "judge", "--quorum", "2",
                    "--json", "--no-raw")
    meta = json.loads(result.stdout)["metadata"]
    assert (meta["members"], meta["answered"], meta["agreeing"]) == (2, 2, 2)
    assert meta["status"] == "success", meta["notes"]


def test_llm_m_line_shows_the_counts_and_status(panel):
    panel.add("m2", status=401, error_message="bad key")
    assert invoke("consortium", "save", "pair", "-m", "m1", "-m", "m2", "--arbiter", "judge").exit_code == 0
    import llm

    response = llm.get_model("pair").prompt("What is 6*7?")
    assert response.text() == "The answer is 42."
    meta = response.response_json["metadata"]
    assert meta["status"] == "partial" and (meta["members"], meta["answered"]) == (2, 1)


def test_runs_recorded_before_the_vocabulary_read_in_it(panel):
    """A run recorded by an earlier version as 'success' whose threshold was
    not reached (it has no notes) lists as below_threshold; one that reached
    it stays a success."""
    from llm_consortium.storage import store

    for confidence in (0.5, 0.9):
        panel.add("judge", reply=arbiter_xml("The answer is 42.", confidence))
        invoke("consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--max-iterations", "1")
    with store.connection() as conn:  # as an earlier version left them
        conn.execute("UPDATE consortium_runs SET status = 'success', notes = NULL, members = NULL, answered = NULL, "
                     "agreeing = NULL")
    low, high = sorted(store.list_runs(), key=lambda run: run.confidence)
    assert (low.status, high.status) == ("below_threshold", "success")
    assert store.get_run(low.id)["status"] == "below_threshold"
    table = invoke("consortium", "runs").stdout
    assert "threshold not reached: confidence 0.50" in table


def test_no_verdict_prints_no_answer_and_exits_1(sim):
    """With --max-iterations 1 and an unreadable judge, three different
    answers printed member #1's "London" as the answer, exit 0."""
    answers = ["The capital is London.", "I think it is Paris.",
               "Paris is the capital of France, and always has been since the Middle Ages."]
    for i, answer in enumerate(answers, 1):
        sim.add(f"m{i}", reply=answer)
    sim.add("judge", reply="I will not use the format.")
    result = invoke("consortium", "Capital of France?", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge",
                    "--max-iterations", "1", "--attempts", "1", "--no-raw")
    assert result.exit_code == 1 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: No verdict") and "'The capital is London.' (m1#1)" in last
    assert "'I think it is Paris.' (m2#1)" in last
    assert "recorded as no_verdict" in result.stderr
    assert db_rows("select status from consortium_runs") == [{"status": "no_verdict"}]
    shown = invoke("consortium", "inspect").stdout
    assert "No verdict this round" in shown and "No judge decided this round" not in shown
    # The runs table keeps each note to one line of its own (seen with a real model: every whole answer)
    table = invoke("consortium", "runs").stdout.splitlines()
    assert table[2].strip().startswith("no verdict: ") and table[2].endswith("…") and len(table[2]) <= 130


def test_a_budget_that_left_no_answer_exits_1(sim):
    """A judge the budget could not pay leaves no answer: an empty line with
    exit 0 and status success before."""
    sim.add("m1", model_name="gpt-4o-2024-08-06", reply="42")  # priced as gpt-4o
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("42", 0.9))
    prompt = " ".join(["a"] * 8000)  # the simulator counts a word a token: twice the estimate
    result = invoke("consortium", prompt, "-m", "m1", "--arbiter", "judge", "--max-cost", "0.038", "--no-raw")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("Error: No answer: the arbiter (judge) of round 1 was not called")
    assert db_rows("select status from consortium_runs") == [{"status": "budget"}]


def test_the_interrupt_hint_reaches_the_terminal_and_the_record(sim):
    """Members of one llama.cpp server cancelling each other: the hint to
    start it with --interrupt_requests False is shown and recorded."""
    sim.add_many(["m1", "m2", "m3"], reply="Paris.", latency=0.3, server="llama", interrupt_requests=True)
    sim.add("judge", reply=arbiter_xml("Paris.", 0.95))
    result = invoke("consortium", "Capital?", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge", "--no-raw")
    assert result.exit_code == 0 and result.stdout == "Paris.\n"
    assert "start it with --interrupt_requests False" in result.stderr
    assert "3 of 3 answered" in result.stderr
    (run,) = json.loads(invoke("consortium", "runs", "--json").stdout)
    assert run["status"] == "success" and any("--interrupt_requests False" in note for note in run["notes"])


def test_a_run_that_failed_after_a_judged_round_gives_no_answer(sim):
    """Round 1 judged, round 2's members all failed: the run failed, and its
    result carried round 1's synthesis as if it were the answer."""
    import time

    def slow_in_round_two(request):
        if "<previous_synthesis>" in request.user:  # round 2
            time.sleep(3)
        return "It is <answer>42</answer>"

    sim.add("m1", reply=slow_in_round_two)
    sim.add("judge", reply=arbiter_xml("Round one says 42.", 0.5))
    result = invoke("consortium", "What is 6*7?", "-m", "m1", "--arbiter", "judge", "--max-iterations", "2",
                    "--timeout", "1", "--attempts", "1", "--json", "--no-raw")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["metadata"]["status"] == "failed" and data["metadata"]["iteration_count"] == 2
    assert data["synthesis"]["synthesis"] == ""
    assert data["iterations"][0]["arbiter"]["synthesis"] == "Round one says 42."  # kept where it belongs
