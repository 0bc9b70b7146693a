import random

import pytest

from llm_consortium.core.parsing import parse_arbiter, parse_confidence
from llm_consortium.core.prompts import ECHO, EMPTY, JUDGE_TEMPLATES, NO_SYNTHESIS, UNCLOSED, reminder, template
from llm_consortium.evaluation.simulator import arbiter_xml

VALID = """<analysis>
Both members agree on the main point.
</analysis>
<dissent>Member B doubts the edge case.</dissent>
<refinement_areas>
- Check the edge case
* Cite a source
</refinement_areas>
<confidence>0.8</confidence>
<synthesis>
The answer is 42.

- It holds when a < b, and <b>bold</b> markup
  and a </synthetic> look-alike pass through.
- Unicode: héllo → 世界 🎉
</synthesis>"""

VALID_SYNTHESIS = """The answer is 42.

- It holds when a < b, and <b>bold</b> markup
  and a </synthetic> look-alike pass through.
- Unicode: héllo → 世界 🎉"""


# parse_confidence


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.85", 0.85),
        ("85%", 0.85),
        ("85 %", 0.85),
        ("85", 0.85),
        ("100", 1.0),
        ("1", 1.0),
        ("0", 0.0),
        (".9", 0.9),
        ("0.85/1", 0.85),
        ("8.5/10", 0.85),
        ("8.5 / 10", 0.85),
        ("12/10", 1.0),
        ("Confidence: 0.9", 0.9),
        ("**0.9**", 0.9),
        (" 0.9 \n", 0.9),
        ("0.9.", 0.9),
        ("high (0.7)", 0.7),
    ],
)
def test_parse_confidence_forms(text, expected):
    assert parse_confidence(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    ["high", "", "   ", "garbage", "-0.5", "150", "250%", "5/0", "gpt4", "2nd", None],
)
def test_parse_confidence_unusable(text):
    assert parse_confidence(text) is None


# parse_arbiter: well-formed and lenient inputs


def test_valid_reply():
    judgement = parse_arbiter(VALID)
    assert judgement.synthesis == VALID_SYNTHESIS
    assert judgement.analysis == "Both members agree on the main point."
    assert judgement.dissent == "Member B doubts the edge case."
    assert judgement.refinement_areas == ["Check the edge case", "Cite a source"]
    assert judgement.confidence == pytest.approx(0.8)
    assert judgement.parse_ok is True


def test_case_whitespace_attributes_and_order():
    text = """< SYNTHESIS type="final" >  Done.  </ Synthesis >
<Confidence>  90% </CONFIDENCE >
<ANALYSIS>x</analysis>"""
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "Done."
    assert judgement.confidence == pytest.approx(0.9)
    assert judgement.analysis == "x"
    assert judgement.parse_ok


def test_text_and_fences_around_the_xml():
    text = "Here is my verdict:\n```xml\n" + VALID + "\n```\nHope that helps!"
    judgement = parse_arbiter(text)
    assert judgement.synthesis == VALID_SYNTHESIS
    assert judgement.confidence == pytest.approx(0.8)


def test_fence_wrapping_tag_content_is_removed():
    text = (
        "<analysis>```\nfenced analysis\n```</analysis>"
        "<synthesis>\n```markdown\n# Title\nbody\n```\n</synthesis>"
    )
    judgement = parse_arbiter(text)
    assert judgement.analysis == "fenced analysis"
    assert judgement.synthesis == "# Title\nbody"


def test_code_answer_in_synthesis_is_kept():
    # A fence naming a language is part of the answer, and so are two blocks.
    code = "```python\nprint('hi')\n```"
    assert parse_arbiter(f"<synthesis>{code}</synthesis>").synthesis == code
    two = "```\na\n```\ntext\n```\nb\n```"
    assert parse_arbiter(f"<synthesis>{two}</synthesis>").synthesis == two


@pytest.mark.parametrize("tag", ["thinking", "think", "reasoning", "THINK"])
def test_reasoning_block_quoting_the_format_loses(tag):
    text = (
        f"<{tag}>I must answer like <synthesis>QUOTED</synthesis> with "
        f"<confidence>0.1</confidence> and <analysis>fake</analysis>.</{tag}>\n"
        "<analysis>real</analysis><confidence>0.9</confidence>"
        "<synthesis>REAL</synthesis>"
    )
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "REAL"
    assert judgement.analysis == "real"
    assert judgement.confidence == pytest.approx(0.9)


def test_reasoning_block_without_answer_is_not_parsed():
    text = "<think><synthesis>QUOTED</synthesis></think>"
    judgement = parse_arbiter(text)
    assert judgement.synthesis == ""
    assert judgement.parse_ok is False


def test_unclosed_reasoning_block_still_yields_the_later_answer():
    text = "<think>like <synthesis>QUOTED</synthesis>\n<synthesis>REAL</synthesis>"
    assert parse_arbiter(text).synthesis == "REAL"


def test_tags_quoted_in_any_leading_reasoning_block_do_not_count():
    text = (
        "<think>format: <confidence>0.1</confidence></think>\n"
        "<think>or <confidence>0.2</confidence></think>\n<synthesis>REAL</synthesis>"
    )
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "REAL" and judgement.confidence == 0.0


def test_think_tags_inside_the_synthesis_are_content():
    text = "<synthesis>Models emit <think>...</think> first.</synthesis>"
    assert parse_arbiter(text).synthesis == "Models emit <think>...</think> first."


def test_two_answers_last_wins():
    text = (
        "Format: <synthesis>...</synthesis><confidence>0-1</confidence>\n"
        "<confidence>0.6</confidence><synthesis>second</synthesis>"
    )
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "second"
    assert judgement.confidence == pytest.approx(0.6)


def test_mention_of_a_tag_inside_another_section():
    text = "<analysis>See the <synthesis> below.</analysis><synthesis>S</synthesis>"
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "S"
    assert judgement.analysis == "See the <synthesis> below."


def test_missing_tags_give_defaults():
    judgement = parse_arbiter("<analysis>only this</analysis>")
    assert judgement.analysis == "only this"
    assert judgement.synthesis == ""
    assert judgement.dissent == ""
    assert judgement.confidence == 0.0
    assert judgement.refinement_areas == []
    assert judgement.parse_ok is False


def test_unreadable_confidence_is_zero():
    assert parse_arbiter("<confidence>high</confidence>").confidence == 0.0


def test_empty_synthesis_is_not_ok():
    assert parse_arbiter("<synthesis>  \n </synthesis>").parse_ok is False


@pytest.mark.parametrize("text", ["", None, "just prose, no tags", "<<<>>>///"])
def test_empty_and_tagless(text):
    judgement = parse_arbiter(text)
    assert judgement.synthesis == ""
    assert judgement.parse_ok is False


# A verdict must be a verdict (issue 19): not cut off, not empty, not an echo.


@pytest.mark.parametrize(
    "text",
    [
        "<analysis>a</analysis>\n<synthesis>\nThe answer is cut off mid",
        "<synthesis>Done.</synth",
        "<synthesis>Done. <",
        "<synthesis>a < b",
        "<synthesis>Paris.</synthesis>\n<synthesis>On second thought, the answer is",
        "<synthesis>S\n<confidence>0.7\n<dissent>d</dissent>",
    ],
)
def test_a_synthesis_never_closed_is_no_verdict(text):
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "" and judgement.parse_ok is False
    assert judgement.notes == [UNCLOSED]


def test_the_other_sections_of_a_cut_reply_are_still_read():
    judgement = parse_arbiter("<analysis>a</analysis><confidence>0.7</confidence>\n<synthesis>The answer is cut off mid")
    assert judgement.analysis == "a" and judgement.confidence == pytest.approx(0.7)


def test_unclosed_section_runs_to_the_next_section():
    text = "<confidence>0.7\n<dissent>d\n<synthesis>S</synthesis>\n<analysis>cut off mid"
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "S" and judgement.parse_ok
    assert judgement.confidence == pytest.approx(0.7)
    assert judgement.dissent == "d"
    assert judgement.analysis == "cut off mid"


@pytest.mark.parametrize(
    "text",
    [
        "<synthesis></synthesis>",
        "<synthesis>  \n </synthesis>",
        "<synthesis>...</synthesis>",
        "<synthesis> - ? </synthesis>",
        "<synthesis><answer></answer></synthesis>",
        "<synthesis>```\n\n```</synthesis>",
    ],
)
def test_an_empty_synthesis_is_no_verdict(text):
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "" and judgement.parse_ok is False
    assert judgement.notes == [EMPTY]


@pytest.mark.parametrize("text", ["<synthesis/>", "<synthesis />\nParis.", "<analysis>a</analysis><SYNTHESIS/>"])
def test_a_self_closing_synthesis_tag_opens_nothing(text):
    judgement = parse_arbiter(text)
    assert judgement.parse_ok is False and judgement.notes == [NO_SYNTHESIS]


@pytest.mark.parametrize("answer", ["∞", "π", "0", "🎉", "$"])
def test_a_one_symbol_synthesis_is_a_verdict(answer):
    assert parse_arbiter(f"<synthesis>{answer}</synthesis>").synthesis == answer


def test_an_empty_synthesis_after_a_real_one_is_passed_over():
    judgement = parse_arbiter("<synthesis>Paris.</synthesis>\n<synthesis></synthesis>")
    assert judgement.synthesis == "Paris." and judgement.notes == []


# The reminder's own words, as an arbiter that echoes them writes them.
REMINDER_ECHO = reminder(NO_SYNTHESIS).strip().removeprefix("---").strip()


@pytest.mark.parametrize(
    "text",
    [
        # The case: "block." read as the verdict.
        REMINDER_ECHO,
        "...could not be used because it had no <synthesis> block.</synthesis>",
        "<analysis>ok</analysis>\nYour previous reply to this could not be used because it had no <synthesis> "
        "block.</synthesis>\n<confidence>0.9</confidence>",
    ],
)
def test_an_echo_of_the_reminder_is_no_verdict(text):
    judgement = parse_arbiter(text)
    assert judgement.synthesis == "" and judgement.parse_ok is False
    assert judgement.notes == [ECHO]


def test_a_verdict_followed_by_an_echo_of_the_reminder_is_kept():
    judgement = parse_arbiter(f"<synthesis>Paris.</synthesis>\n{REMINDER_ECHO}")
    assert judgement.synthesis == "Paris." and judgement.parse_ok


def scaffold_echo(name: str) -> str:
    """A synthesis that is a judge template's own text, placeholders and all."""
    return f"<confidence>0.9</confidence>\n<synthesis>{template(name).template}</synthesis>"


@pytest.mark.parametrize("name", JUDGE_TEMPLATES)
def test_a_synthesis_that_is_a_prompt_scaffold_is_no_verdict(name):
    judgement = parse_arbiter(scaffold_echo(name))
    assert judgement.parse_ok is False and judgement.notes == [ECHO]


def test_the_council_chairs_scaffold_echo_is_no_verdict():
    # What a small chair wrote back: its prompt's peer-review section and the
    # format line, with a number for the confidence.
    chair = template("council_chair").template.split("$review")[0].split("$arbiter_prompt")[1]
    reply = f"<confidence>0.8</confidence>\n<synthesis>{chair.strip()}\nReply in the format asked for above.</synthesis>"
    judgement = parse_arbiter(reply)
    assert judgement.parse_ok is False and judgement.notes == [ECHO]


@pytest.mark.parametrize(
    "synthesis",
    [
        "The best answer to the question is 42.",
        "The final answer to the original prompt is 42.",
        "Check each claim: the answers disagree, and one is right.",
        "block.",
    ],
)
def test_a_verdict_in_words_the_prompts_also_use_is_kept(synthesis):
    assert parse_arbiter(arbiter_xml(synthesis)).synthesis == synthesis


def test_refinement_areas_bullets_and_none():
    text = """<refinement_areas>
- dash
* star
• dot
1. numbered
2) paren
**Bold** stays

None
n/a
plain line
</refinement_areas>"""
    assert parse_arbiter(text).refinement_areas == [
        "dash", "star", "dot", "numbered", "paren", "**Bold** stays", "plain line"
    ]


def test_refinement_areas_subtags():
    text = (
        "<refinement_areas><area>first</area>\n<AREA> second </AREA>"
        "<item>third</item></refinement_areas>"
    )
    assert parse_arbiter(text).refinement_areas == ["first", "second", "third"]


def test_refinement_areas_none():
    assert parse_arbiter("<refinement_areas>None.</refinement_areas>").refinement_areas == []


# parse_arbiter: random hostile inputs

FRAGMENTS = [
    "<", ">", "/", "</", " ", "\n", "```", "```xml\n", "0.9", "85%", "-3", "1e9",
    "true", "none", "- ", "é", "世界", "🎉", "\x00", "\u200b",
] + [
    piece
    for tag in ["analysis", "dissent", "refinement_areas", "confidence",
                "synthesis", "think", "thinking", "reasoning",
                "area", "item"]
    for piece in (f"<{tag}>", f"</{tag}>", f"<{tag.upper()} a='1'>", tag, f"</{tag[:3]}")
]


def check_judgement(judgement):
    assert 0.0 <= judgement.confidence <= 1.0
    assert isinstance(judgement.synthesis, str)
    assert all(isinstance(area, str) and area for area in judgement.refinement_areas)
    assert judgement.parse_ok == bool(judgement.synthesis)


def test_random_fragment_soup_never_raises():
    rng = random.Random(1234)
    for _ in range(3000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 40)))
        check_judgement(parse_arbiter(text))


def test_random_slices_of_a_valid_reply_never_raise():
    rng = random.Random(99)
    wrapped = "<think>plan <synthesis>q</synthesis></think>\n" + VALID
    for _ in range(3000):
        start = rng.randrange(len(wrapped))
        end = rng.randrange(start, len(wrapped) + 1)
        text = wrapped[start:end]
        check_judgement(parse_arbiter(text))


def test_random_unicode_never_raises():
    rng = random.Random(7)
    for _ in range(500):
        text = "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randint(0, 80)))
        check_judgement(parse_arbiter(text))
        assert parse_confidence(text) is None or 0.0 <= parse_confidence(text) <= 1.0
