"""The `llm consortium` commands and saved consortiums as llm models, driven
through llm's own CLI (CliRunner in-process, and real `llm` subprocesses)."""

import asyncio
import json
import signal
import sqlite3
import subprocess
import time

import llm
import pytest

from helpers import db_rows, invoke, llm_process, llm_subprocess
from llm_consortium.evaluation.simulator import arbiter_xml

RUN = ["consortium", "What is 6*7?", "-m", "m1", "-m", "m2", "--arbiter", "judge"]


def test_run_answer_on_stdout_details_on_stderr(panel):
    result = invoke(*RUN)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    assert "Confidence 0.90" in result.stderr and "1 round" in result.stderr
    assert "Both agree." in result.stderr
    assert "Member one says 42." in result.stderr  # --raw is on by default
    assert "<synthesis>" in result.stderr  # the arbiter's raw reply too


def test_run_is_the_default_subcommand(panel):
    explicit = invoke("consortium", "run", *RUN[1:])
    assert explicit.exit_code == 0 and explicit.stdout == "The answer is 42.\n"
    assert "run*" in invoke("consortium", "--help").stdout  # click-default-group marks the default


def test_no_raw_json_and_output(panel, tmp_path):
    out = tmp_path / "result.json"
    result = invoke(*RUN, "--no-raw", "--json", "--output", str(out))
    assert result.exit_code == 0
    assert "Member one says 42." not in result.stderr
    data = json.loads(result.stdout)
    assert data["synthesis"]["synthesis"] == "The answer is 42."
    assert json.loads(out.read_text())["metadata"]["iteration_count"] == 1


def test_stdin_appended_or_alone(panel):
    invoke(*RUN, input="extra context")
    assert panel.calls("m1")[-1].user == "What is 6*7?\n\nextra context"
    invoke("consortium", "-m", "m1", "--arbiter", "judge", input="only stdin")
    assert panel.calls("m1")[-1].user == "only stdin"
    invoke(*RUN, "--no-stdin", input="ignored")
    assert panel.calls("m1")[-1].user == "What is 6*7?"


def test_options_reach_the_engine(panel):
    panel.add("judge", reply=[arbiter_xml("first", 0.5), arbiter_xml("second", 0.6), arbiter_xml("third", 0.99)])
    result = invoke(
        "consortium", "q", "-m", "m1:2", "--arbiter", "judge", "--system", "Be terse.",
        "--confidence-threshold", "0.55", "--max-iterations", "3", "--no-raw",
    )
    assert result.stdout == "second\n"
    assert len(panel.calls("m1")) == 4  # two instances, two rounds
    assert panel.calls("m1")[0].system == "Be terse."


@pytest.mark.parametrize(
    "args, message",
    [
        (["q", "-m", "m1", "-m", "ghost", "--arbiter", "phantom"], "ghost, phantom"),
        (["-m", "m1", "--arbiter", "judge"], "No prompt"),
        (["q", "-m", "m1", "--arbiter", "judge", "--confidence-threshold", "150"], "between 0 and 1"),
        (["q", "-m", "m1", "--arbiter", "judge", "--max-iterations", "0"], "max iterations"),
        (["q", "-m", "m1", "--arbiter", "judge", "--output", "/nonexistent-dir/x.json"], "Cannot write"),
        (["q", "-m", "m1"], "--arbiter MODEL"),  # the built-in default arbiter is not installed
        (["q", "-m", "m1", "--arbiter", "gpt-4o-mini"], "No API key for: gpt-4o-mini ('llm keys set openai'"),
        (["q"], "llm consortium default"),  # built-in defaults not installed
        (["q", "-m", "m1:0", "--arbiter", "judge"],
         "Error: Bad member count in 'm1:0': the count after ':' must be a whole number, 1 or more"),
        (["q", "-m", "m1:x", "--arbiter", "judge"], "Bad member count in 'm1:x'"),
        (["q", "-m", "m1:-2", "--arbiter", "judge"], "Bad member count in 'm1:-2'"),
    ],
)
@pytest.mark.empty_user_dir
def test_bad_input_one_line_no_calls(panel, args, message):
    result = invoke("consortium", *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert panel.requests == []
    assert not (llm.user_dir() / "logs.db").exists() or db_rows("select * from consortium_runs") == []


def test_save_list_show_remove(panel):
    result = invoke("consortium", "save", "my-c", "-m", "m1", "-m", "m2:2", "--arbiter", "judge",
                    "--confidence-threshold", "0.9", "--max-iterations", "5", "--system", "Be kind.")
    assert result.exit_code == 0, result.stderr
    listing = invoke("consortium", "list").stdout
    assert "my-c: m1, m2:2 → judge" in listing
    assert json.loads(invoke("consortium", "list", "--json").stdout)[0]["max_iterations"] == 5
    shown = invoke("consortium", "show", "my-c").stdout
    assert "m2:2" in shown and "Arbiter: judge" in shown and "0.9" in shown and "Be kind." in shown
    assert invoke("consortium", "remove", "my-c").exit_code == 0
    assert invoke("consortium", "list").stdout.startswith("No saved consortiums")


@pytest.mark.parametrize("command", [["show", "nope"], ["remove", "nope"], ["default", "nope"]])
def test_unknown_saved_name(panel, command):
    result = invoke("consortium", *command)
    assert result.exit_code == 1 and "No saved consortium named 'nope'" in result.stderr


def test_save_refuses_existing_model_and_missing_options(panel):
    assert "already a model" in invoke("consortium", "save", "m1", "-m", "m2", "--arbiter", "judge").stderr
    assert invoke("consortium", "save", "x", "--arbiter", "judge").exit_code == 1
    assert invoke("consortium", "save", "x", "-m", "m1").exit_code == 1
    assert "ghost" in invoke("consortium", "save", "x", "-m", "ghost", "--arbiter", "judge").stderr


def test_default_consortium(panel):
    invoke("consortium", "save", "mine", "-m", "m2", "--arbiter", "judge")
    assert invoke("consortium", "default", "mine").exit_code == 0
    result = invoke("consortium", "q", "--no-raw")
    assert result.stdout == "The answer is 42.\n"
    assert len(panel.calls("m2")) == 1 and panel.calls("m1") == []
    # Recorded as the default's run: runs, the viewer and its filter name it.
    (row,) = json.loads(invoke("consortium", "runs", "--json").stdout)
    assert row["name"] == "mine"


def test_a_mistyped_subcommand_is_not_asked_as_a_prompt(panel):
    invoke("consortium", "save", "mine", "-m", "m2", "--arbiter", "judge")
    assert invoke("consortium", "default", "mine").exit_code == 0
    for typo, meant in (("lst", "list"), ("inspct", "inspect"), ("rnus", "runs")):
        result = invoke("consortium", typo)
        assert result.exit_code == 2 and panel.requests == [], typo
        assert f"'{typo}' is not a command: did you mean 'llm consortium {meant}'?" in result.stderr
        assert f"llm consortium run {typo}" in result.stderr
    # A real one-word prompt, and the typo asked on purpose, are asked.
    assert invoke("consortium", "Hello", "--no-raw").exit_code == 0
    assert invoke("consortium", "run", "lst", "--no-raw").exit_code == 0
    assert len(panel.calls("m2")) == 2


def test_saved_consortium_is_a_model(panel):
    invoke("consortium", "save", "my-c", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    models = invoke("models").stdout
    assert "my-c" in models
    options = invoke("models", "--options", "-q", "my-c").stdout
    assert "confidence_threshold" in options and "max_iterations" in options
    result = invoke("-m", "my-c", "What is 6*7?")
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    assert "The answer is 42." in invoke("logs", "-n", "1").stdout


def test_option_overrides(panel):
    panel.add("judge", reply=[arbiter_xml("low", 0.1), arbiter_xml("again", 0.2)])
    invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge")
    result = invoke("-m", "my-c", "-o", "max_iterations", "1", "q")
    assert result.stdout == "low\n" and len(panel.calls("m1")) == 1
    bad = invoke("-m", "my-c", "-o", "bogus", "1", "q")
    assert bad.exit_code != 0 and panel.calls("m1").__len__() == 1


def test_continue_conversation_reaches_members(panel):
    invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge")
    invoke("-m", "my-c", "First question", "-s", "Be brief.")
    result = invoke("-c", "Follow-up question")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    follow = panel.calls("m1")[-1]
    contents = [(m["role"], m["content"]) for m in follow.messages]
    assert contents[0] == ("system", "Be brief.")
    assert contents.count(("user", "First question")) == 1  # once, not once per way history is given
    assert contents.count(("assistant", "The answer is 42.")) == 1
    assert contents[-1] == ("user", "Follow-up question")
    assert "First question" in panel.calls("judge")[-1].user  # the arbiter sees the conversation


def test_chat(panel):
    assert invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    result = invoke("chat", "-m", "my-c", input="hello\nsecond turn\nquit\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("The answer is 42.") == 2
    second = panel.calls("m1")[-1]
    assert [m["content"] for m in second.messages if m["role"] == "user"] == ["hello", "second turn"]


@pytest.mark.slow  # the installed entry point
def test_run_in_a_process_of_its_own_then_logs_and_continue(panel):
    result = llm_subprocess(*RUN)  # as a user runs it: the plugin loaded by its entry point
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    logs = invoke("logs", "-n", "1")
    assert "The answer is 42." in logs.stdout
    after_run = invoke("-c", "and 5*5?")  # continues the ad hoc consortium
    assert after_run.exit_code == 0, after_run.stderr
    assert after_run.stdout == "The answer is 42.\n"
    assert panel.calls("m2")[-1].user == "and 5*5?" and "What is 6*7?" in panel.calls("m2")[-1].text
    invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge")
    assert invoke("-m", "my-c", "What is 6*7?").exit_code == 0
    again = invoke("-c", "and 7*8?")  # continues the consortium, not a member
    assert again.exit_code == 0, again.stderr
    assert again.stdout == "The answer is 42.\n"
    assert "What is 6*7?" in panel.calls("m1")[-1].text and panel.calls("m1")[-1].user == "and 7*8?"


def test_database_after_run(panel):
    invoke(*RUN)
    (run,) = db_rows("select * from consortium_runs")
    assert run["status"] == "success" and run["confidence"] == 0.9 and run["iterations"] == 1
    assert run["synthesis"] == "The answer is 42." and run["input_tokens"] > 0
    calls = db_rows("select * from consortium_calls where run_id = ? order by id", (run["id"],))
    assert sorted(c["role"] for c in calls) == ["arbiter", "member", "member"]
    member = next(c for c in calls if c["model"] == "m1")
    assert member["prompt"] == "What is 6*7?" and member["text"] == "Member one says 42."
    assert "Member one says 42." in json.loads(run["result"])["iterations"][0]["model_responses"][0]["text"]


@pytest.mark.empty_user_dir
def test_logs_off(panel):
    (llm.user_dir() / "logs-off").touch()
    invoke(*RUN)
    path = llm.user_dir() / "logs.db"
    assert not path.exists() or db_rows(
        "select count(*) n from sqlite_master where name = 'consortium_runs'"
    )[0]["n"] == 0 or db_rows("select * from consortium_runs") == []


def test_member_failure_shown_not_traceback(panel):
    panel.add("m2", status=401, error_message="bad key")
    result = invoke(*RUN)
    assert result.exit_code == 0 and result.stdout == "The answer is 42.\n"
    assert "1 member failed" in result.stderr and "401" in result.stderr
    assert "Traceback" not in result.stderr


def test_all_members_fail_exit_1(panel):
    panel.add("m1", status=401)
    panel.add("m2", status=401)
    result = invoke(*RUN)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Every member failed")
    assert db_rows("select status from consortium_runs") == [{"status": "failed"}]


def recorded_text(model):
    try:
        return [c["text"] for c in db_rows("select text from consortium_calls where model = ?", (model,)) if c["text"]]
    except sqlite3.OperationalError:  # no table yet
        return []


@pytest.mark.slow  # a signal
def test_ctrl_c_records_cancelled_run(panel):
    panel.add("m1", reply="quick")
    panel.add("m2", reply="never", latency=30)
    proc = llm_process(*RUN, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    deadline = time.time() + 20
    while len(panel.calls("m2")) == 0 or not recorded_text("m1"):  # m1's answer has arrived and is recorded
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert "Traceback" not in proc.stderr.read()
    (run,) = db_rows("select * from consortium_runs")
    assert run["status"] == "cancelled"
    calls = db_rows("select * from consortium_calls where run_id = ?", (run["id"],))
    assert "quick" in [c["text"] for c in calls]  # what had arrived is kept
    (late,) = [c for c in calls if c["model"] == "m2"]  # and the member still answering is marked
    assert late["cancelled"] == 1 and late["error"] == "Cancelled: the run was cancelled"


def test_runs_and_inspect(panel):
    invoke(*RUN)
    listing = invoke("consortium", "runs").stdout
    assert "success" in listing and "m1, m2" in listing and "What is 6*7?" in listing
    rows = json.loads(invoke("consortium", "runs", "--json").stdout)
    shown = invoke("consortium", "inspect", rows[0]["id"][:8]).stdout
    assert "Round 1" in shown and "Member one says 42." in shown and "Both agree." in shown
    assert json.loads(invoke("consortium", "inspect", "--json").stdout)["id"] == rows[0]["id"]
    assert invoke("consortium", "inspect", "zzzz").exit_code == 1


def test_runs_has_a_header_and_a_one_line_prompt_column(panel):
    invoke(*RUN, "--no-raw")
    long_prompt = "Line one\nline two " + "word " * 40
    invoke("consortium", long_prompt, "-m", "m1", "--arbiter", "judge", "--no-raw")
    header, newest, older = invoke("consortium", "runs").stdout.splitlines()
    assert header.split() == ["ID", "STARTED", "STATUS", "CONF", "AGREE", "ANSW", "RND", "TOKENS", "COST",
                              "CONSORTIUM", "PROMPT"]
    assert older.endswith("  m1, m2      What is 6*7?")
    assert newest.split("  m1          ")[1].startswith("Line one line two word word")
    assert newest.endswith("…") and len(newest) < 140
    for line in (newest, older):  # the columns line up under the header
        assert line[header.index("STATUS")-2:header.index("STATUS")] == "  "
        assert line[header.index("PROMPT"):][0] in "LW"


@pytest.mark.empty_user_dir  # it writes an older version's table itself
def test_config_saved_by_version_0_3_works(panel):
    conn = sqlite3.connect(llm.user_dir() / "logs.db")
    conn.execute("CREATE TABLE consortium_configs (name TEXT PRIMARY KEY, config TEXT, created_at TEXT)")
    old = {"models": ["m1", "m2"], "system_prompt": None, "confidence_threshold": 0.8, "max_iterations": 3,
           "arbiter": "judge"}
    conn.execute("INSERT INTO consortium_configs VALUES (?, ?, ?)", ("old-one", json.dumps(old), "2024-11-01"))
    conn.commit()
    conn.close()
    assert "old-one" in invoke("consortium", "list").stdout
    assert invoke("-m", "old-one", "q").stdout == "The answer is 42.\n"


def test_python_get_model_sync_and_async(panel):
    invoke("consortium", "save", "my-c", "-m", "m1", "--arbiter", "judge")
    assert llm.get_model("my-c").prompt("q").text() == "The answer is 42."

    async def main():
        model = llm.get_async_model("my-c")
        response = model.prompt("q")
        text = await response.text()
        # the sync model works from inside a running loop too
        return text, llm.get_model("my-c").prompt("q").text(), (await response.usage()).output

    text, inside_loop, output_tokens = asyncio.run(main())
    assert text == inside_loop == "The answer is 42."
    assert output_tokens > 0


def test_usage_totals_shown_and_logged(panel):
    result = invoke(*RUN, "-u", "--no-raw")
    assert "Token usage:" in result.stderr and "output" in result.stderr
    invoke("consortium", "save", "my-c", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    saved = invoke("-m", "my-c", "q", "-u")
    assert "Token usage:" in saved.stderr
    logged = json.loads(invoke("logs", "-n", "1", "--json").stdout)[0]
    member_output = sum(len(r.split()) for r in ["Member one says 42.", "Member two says 42."])
    assert logged["output_tokens"] > member_output  # members' and the arbiter's tokens summed


def test_vote_method_from_cli_and_saved(panel):
    panel.add("m1", reply="Working... <answer>42</answer>")
    panel.add("m2", reply="So <answer>42</answer>")
    result = invoke(*RUN, "--method", "vote", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "42\n"  # the answer voted on, not the first member's text around it
    assert "Vote: 42 ×2" in result.stderr and "2 of 2 agree, 2 of 2 answered (by short answers)" in result.stderr
    assert panel.calls("judge") == []  # a clear majority needs no arbiter
    assert "<answer>" in panel.calls("m1")[0].system  # members are asked for a short answer
    invoke("consortium", "save", "voters", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--method", "vote")
    assert "Method: vote" in invoke("consortium", "show", "voters").stdout
    assert invoke("-m", "voters", "q").stdout == "42\n"
    assert panel.calls("judge") == []


def test_council_method_shows_ranking(panel):
    panel.add("m3", reply="Member three says 41.")
    panel.add_many(["m1", "m2", "m3"], reply=lambda req: (
        "FINAL RANKING:\n1. Response A\n2. Response B" if "FINAL RANKING" in req.user else "an answer"))
    result = invoke("consortium", "q", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge",
                    "--method", "council", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    assert "Peer ranking:" in result.stderr and "ballots" in result.stderr
    roles = {row["role"] for row in db_rows("select role from consortium_calls")}
    assert roles == {"member", "reviewer", "arbiter"}


def test_eval_is_a_subcommand(panel):
    assert "eval" in invoke("consortium", "--help").stdout


def test_save_refuses_cycles(panel):
    invoke("consortium", "save", "a", "-m", "m1", "--arbiter", "judge")
    assert invoke("consortium", "save", "b", "-m", "a", "--arbiter", "judge").exit_code == 0
    result = invoke("consortium", "save", "a", "-m", "b", "--arbiter", "judge")
    assert result.exit_code == 1 and "cannot include itself" in result.stderr
    assert invoke("consortium", "save", "a", "-m", "m1", "--arbiter", "a").exit_code == 1  # as arbiter too


@pytest.mark.empty_user_dir  # it writes an older version's table itself
def test_broken_saved_row_does_not_break_llm(panel):
    conn = sqlite3.connect(llm.user_dir() / "logs.db")
    conn.execute("CREATE TABLE consortium_configs (name TEXT PRIMARY KEY, config TEXT, created_at TEXT)")
    conn.execute("INSERT INTO consortium_configs VALUES ('bad', ?, '')", (json.dumps({"models": {"m1": "two"}}),))
    conn.commit()
    conn.close()
    result = invoke("models")
    assert result.exit_code == 0 and "m1" in result.stdout


@pytest.mark.parametrize("args, unknown", [
    (["q"], ["claude-3-opus-20240229", "claude-3-sonnet-20240229", "gemini-pro"]),  # gpt-4 is llm's own
    (["q", "-m", "ghost"], ["ghost", "claude-3-opus-20240229"]),  # the default arbiter
])
def test_unknown_default_models_are_named_once(panel, args, unknown):
    result = invoke("consortium", *args)
    assert result.exit_code == 1 and panel.requests == []
    line, = result.stderr.splitlines()
    for model in unknown:
        assert line.count(model) == 1, line
    assert "built-in default" in line and "llm consortium default NAME" in line


def test_a_model_id_with_a_colon_is_a_model_not_a_count(panel):
    panel.add("llama3:8b", reply="Llama says 42.")
    result = invoke("consortium", "q", "-m", "llama3:8b", "-m", "llama3:8b:2", "--arbiter", "judge", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert len(panel.calls("llama3:8b")) == 3


def test_arbiter_with_a_count_is_refused(panel):
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge:2")
    assert result.exit_code == 1 and "single model" in result.stderr and panel.requests == []


def test_api_keys_never_reach_logs_or_stderr(panel, monkeypatch):
    secret = "sk-live-abcdefghijklmnop1234"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    panel.add("m2", status=401, error_message=f"Incorrect API key provided: {secret} (see ?key=AIzaSECRETVALUE)")
    result = invoke(*RUN)
    assert result.exit_code == 0
    assert "Incorrect API key provided: [redacted]" in result.stderr
    assert secret not in result.stderr and "AIzaSECRETVALUE" not in result.stderr
    stored = (llm.user_dir() / "logs.db").read_bytes().decode("latin-1")
    assert "Incorrect API key provided" in stored  # the error is recorded ...
    assert secret not in stored and "AIzaSECRETVALUE" not in stored  # ... without the key


def test_failed_run_still_delivers_what_arrived(panel, tmp_path):
    panel.add("m2", status=500, error_message="down")
    panel.add("m1", reply="Member one says 42.", cut_first=5)
    out = tmp_path / "partial.json"
    result = invoke(*RUN, "--attempts", "1", "--no-raw", "--output", str(out))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Every member failed in round 1")
    assert "recorded as failed" in result.stderr
    partial = json.loads(out.read_text())
    assert "down" in partial["iterations"][0]["model_responses"][1]["error"]


def test_failed_arbiter_answer_is_the_members_and_run_is_degraded(panel):
    panel.add("m2", reply="Member one says 42.")
    panel.add("judge", status=500, error_message="down")
    result = invoke(*RUN, "--attempts", "1", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Member one says 42.\n"
    assert "No judge decided (the arbiter failed" in result.stderr
    assert db_rows("select status from consortium_runs")[0]["status"] == "degraded"


def test_unwritable_output_after_the_run_is_one_line(panel):
    result = invoke(*RUN, "--no-raw", "--output", "/dev/full")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Could not write --output file /dev/full")
    assert "The answer is 42." in invoke("logs", "-n", "1").stdout  # logged before the write failed


def test_quorum_cancellations_are_not_failures(panel):
    panel.add("m2", reply="late", latency=30)
    result = invoke(*RUN, "--quorum", "1")
    assert result.exit_code == 0
    assert "cancelled (quorum reached)" in result.stderr and "failed" not in result.stderr


def test_save_housekeeping(panel):
    assert "Saved consortium" in invoke("consortium", "save", "d1", "-m", "m1", "--arbiter", "judge").stdout
    assert "Updated consortium" in invoke("consortium", "save", "d1", "-m", "m2", "--arbiter", "judge").stdout
    assert invoke("consortium", "save", "has space", "-m", "m1", "--arbiter", "judge").exit_code == 1
    invoke("consortium", "default", "d1")
    invoke("consortium", "remove", "d1")
    assert invoke("consortium", "default").stdout.startswith("(none")
