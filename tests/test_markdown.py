"""``llm consortium inspect RUN --markdown``: a recorded run as a Markdown
transcript. Runs are made through llm's real client against the simulated
provider, then read back from logs.db; the transcript is parsed with
markdown-it-py (CommonMark) to check that no model text changes its
structure: the headings, lists and fenced blocks are the transcript's own,
and every fenced block holds exactly the text it was given."""

import re

import pytest
from markdown_it import MarkdownIt

from helpers import db_rows, invoke
from llm_consortium.core.safetext import printable
from llm_consortium.evaluation.simulator import arbiter_xml
from llm_consortium.faces.markdown import fenced, inline

# Model text that tries every way out of a block: fences of three, four and
# five backticks and of tildes, headings, a list, a quote, a table, HTML that
# opens a comment or a details block, a link, terminal escapes and bidi
# controls (which must not survive), and a lone surrogate.
HOSTILE = (
    "Start\n```\n# Forged heading\n````\n`````\n~~~\n- forged item\n> forged quote\n"
    "| a | b |\n|---|---|\n<!-- <details><summary>x</summary>\n[click](javascript:alert(1)) ![img](http://x/y.png)\n"
    "\x1b]0;owned\x07\x1b[2Jcleared\u202eevil\u2066 and \ud800 end"
)


def parse(markdown: str):
    return MarkdownIt("commonmark").enable("table").parse(markdown)


def fences(tokens) -> list[str]:
    return [t.content for t in tokens if t.type in ("fence", "code_block")]


def shown(token) -> str:
    """What an inline token reads as: its text, with no markup of its own
    (a name or an error from outside must be text only)."""
    assert {child.type for child in token.children} <= {"text"}, token.children
    return "".join(child.content for child in token.children)


def headings(tokens) -> list[str]:
    """Each heading's text, its seconds left out (they vary)."""
    return [re.sub(r" · \d+\.\d s$", "", shown(tokens[i + 1]))
            for i, t in enumerate(tokens) if t.type == "heading_open"]


def list_items(tokens) -> list[str]:
    return [tokens[i + 2].content for i, t in enumerate(tokens) if t.type == "list_item_open"]


def transcript(*args) -> str:
    result = invoke("consortium", "inspect", *args, "--markdown")
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_run_as_markdown_has_the_question_the_answer_and_the_counts(panel):
    panel.add("m3", reply="Member three says 41.")
    panel.add("judge", reply=arbiter_xml("The answer is 42.", 0.85, analysis="Two say 42.",
                                         dissent="m3 says 41.", groups=[["Response A", "Response B"], ["Response C"]]))
    run = invoke("consortium", "What is six times seven?", "-m", "m1", "-m", "m2", "-m", "m3", "--arbiter", "judge")
    assert run.exit_code == 0, run.output
    [row] = db_rows("SELECT id FROM consortium_runs")
    markdown = transcript(row["id"][:8])
    tokens = parse(markdown)
    assert headings(tokens) == [f"Consortium run {row['id'][:8]}", "Round 1 · cost unknown: 4 calls unpriced",
                                "m1 #1", "m2 #1", "m3 #1", "Verdict"]
    assert "- **Status:** success" in markdown
    assert "- **Confidence:** 0.85" in markdown
    assert "- **Panel:** 2 of 3 agree, 3 of 3 answered (by the arbiter's groups)" in markdown
    assert "- **Cost:** cost unknown: 4 calls unpriced (" in markdown
    assert fences(tokens) == ["What is six times seven?\n", "The answer is 42.\n", "m3 says 41.\n",
                              "Member one says 42.\n", "Member two says 42.\n", "Member three says 41.\n",
                              "Two say 42.\n", "m3 says 41.\n"]
    question, answer, dissent = (markdown.index(word) for word in ("**Question**", "**Answer**", "**Dissent**"))
    assert question < answer < dissent < markdown.index("### Round 1")
    assert markdown.endswith(f"*Recorded by llm-consortium: llm consortium inspect {row['id'][:8]}*\n")


def test_hostile_model_text_stays_inside_its_fences(panel):
    panel.add("m1", reply=HOSTILE)
    panel.add("judge", reply=arbiter_xml("Answer: " + HOSTILE, 0.9, analysis="```\n## Forged analysis",
                                         dissent="````` </details> # x"))
    run = invoke("consortium", "Q?", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    assert run.exit_code == 0, run.output
    markdown = transcript()
    tokens = parse(markdown)
    # The structure is the transcript's own: its headings, its list items, no HTML, no link, no image.
    assert headings(tokens) == [headings(tokens)[0], "Round 1 · cost unknown: 3 calls unpriced",
                                "m1 #1", "m2 #1", "Verdict"]
    assert not [t for t in tokens if t.type in ("html_block", "blockquote_open", "table_open", "hr") and
                t.map and markdown.splitlines()[t.map[0]] != "---"]
    inline_children = [c.type for t in tokens if t.type == "inline" for c in t.children]
    assert not {"link_open", "image", "html_inline"} & set(inline_children)
    # Each answer is whole in its block, less what a terminal would act on; bidi controls shown, not applied.
    shown = printable(HOSTILE)
    assert "\x1b" not in markdown and "\u202e" not in markdown and "\u2066" not in markdown
    assert "[U+202E]evil[U+2066]" in markdown
    assert "\ud800" not in markdown
    assert shown + "\n" in fences(tokens)
    assert "Answer: " + shown + "\n" in fences(tokens)
    assert "```\n## Forged analysis\n" in fences(tokens)
    assert "````` </details> # x\n" in fences(tokens)


def test_hostile_names_and_errors_are_one_escaped_line(panel):
    panel.add("m*[x](y)", reply="Fine.")
    panel.add("m2", status=400, error_message="bad\n# Forged\n**bold** <b>x</b> `code` [l](u) ~~s~~ | $x$")
    run = invoke("consortium", "Q?", "-m", "m*[x](y)", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    assert run.exit_code == 0, run.output
    markdown = transcript()
    tokens = parse(markdown)
    assert "m*[x](y) #1" in headings(tokens)
    assert "Forged" not in headings(tokens)
    failed = next(t for t in tokens if t.type == "inline" and t.content.startswith("*failed:*"))
    assert [c.type for c in failed.children][:3] == ["em_open", "text", "em_close"]  # our emphasis, then text
    assert {c.type for c in failed.children[3:]} <= {"text"}
    assert "# Forged **bold** <b>x</b> `code` [l](u) ~~s~~ | $x$" in "".join(c.content for c in failed.children)
    assert "- **Status:** partial" in markdown
    assert "**Notes**" in markdown and "1 of 3 members failed" in markdown


def test_a_run_without_an_answer_says_so(sim):
    sim.add("m1", reply="Apples.")
    sim.add("m2", reply="Pears.")
    sim.add("judge", reply="I will not use the format.")
    run = invoke("consortium", "Which fruit?", "-m", "m1", "-m", "m2", "--arbiter", "judge")
    assert run.exit_code == 1
    markdown = transcript()
    assert "- **Status:** no\\_verdict" in markdown
    assert "- **Confidence:** none (no answer)" in markdown
    assert "**No answer.**" in markdown and "**Answer**" not in markdown
    assert "*No verdict this round: no judge could be read and no answer has a majority.*" in markdown
    assert {"Apples.\n", "Pears.\n"} <= set(fences(parse(markdown)))
    assert "'Apples.' (m1\\#1); 'Pears.' (m2\\#1)" in markdown  # the note, its answers escaped


def test_every_round_and_the_votes_are_in_it(panel):
    panel.add("judge", reply=[arbiter_xml("Maybe 42.", 0.3), arbiter_xml("The answer is 42.", 0.9)])
    run = invoke("consortium", "Q?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--max-iterations", "2")
    assert run.exit_code == 0, run.output
    markdown = transcript()
    assert [h for h in headings(parse(markdown)) if h.startswith("Round")] == [
        "Round 1 · cost unknown: 3 calls unpriced", "Round 2 · cost unknown: 3 calls unpriced"]
    assert "- **Rounds:** 2 of at most 2" in markdown
    panel.add("m1", reply="I think 42.\n<answer>42</answer>")
    panel.add("m2", reply="Surely 42.\n<answer>42</answer>")
    vote = invoke("consortium", "Q?", "-m", "m1", "-m", "m2", "--arbiter", "judge", "--method", "vote")
    assert vote.exit_code == 0, vote.output
    assert "- Vote: 42 ×2 (m1\\#1, m2\\#1)\n" in transcript()


def test_json_and_markdown_together_are_refused(panel):
    assert invoke("consortium", "Q?", "-m", "m1", "--arbiter", "judge").exit_code == 0
    result = invoke("consortium", "inspect", "--json", "--markdown")
    assert result.exit_code == 1
    assert result.stderr == "Error: Give one of --json and --markdown\n"
    missing = invoke("consortium", "inspect", "nope", "--markdown")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: No run matches 'nope'")


@pytest.mark.parametrize("text", ["plain", "a ` b", "```", "x\n````\ny", "`" * 12, "", "\n\nlead and trail\n\n"])
def test_a_fence_is_longer_than_any_backticks_inside(text):
    block = fenced(text)
    [token] = parse(block)
    assert token.type == "fence" and token.content == (text.strip("\n") + "\n")


def test_inline_text_is_literal():
    text = "*a* _b_ `c` [d](e) <f> &amp; ~~g~~ | h | $i$ # j !k \\ l"
    [_, paragraph, _] = parse(inline(text))
    assert [c.type for c in paragraph.children] == ["text"] and paragraph.children[0].content == text


@pytest.mark.parametrize("text", ["- a list", "+ a list", "1. a list", "2) a list", "= setext", "# heading",
                                  "> quote", "***", "<div>"])
def test_inline_text_never_starts_a_block_in_a_list_item(text):
    [item] = list_items(parse(f"- {inline(text)}\n"))
    [_, paragraph, _] = parse(inline(text))
    assert shown(paragraph) == text and item == inline(text)


def test_a_run_whose_process_died_is_read_from_its_rows(panel):
    """No result JSON: the record is what had arrived (``store.record_of_row``)."""
    import socket
    import sqlite3

    import llm

    assert invoke("consortium", "Q?", "-m", "m1", "-m", "m2", "--arbiter", "judge").exit_code == 0
    conn = sqlite3.connect(llm.user_dir() / "logs.db")
    with conn:
        conn.execute("UPDATE consortium_runs SET status = 'running', result = NULL, pid = 2147483646, host = ?",
                     (socket.gethostname(),))
    conn.close()
    markdown = transcript()
    assert "- **Status:** interrupted" in markdown and "**No answer.**" in markdown
    assert {"Member one says 42.\n", "Member two says 42.\n"} <= set(fences(parse(markdown)))
