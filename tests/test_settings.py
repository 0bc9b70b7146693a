"""Each setting is declared once, in ConsortiumConfig: the flags of `run` and
`save`, the -o options of a saved consortium and `show` all come from it."""

import json

import llm
import pytest

from helpers import invoke
from llm_consortium.core.config import ConsortiumConfig, ConsortiumConfigError, parse_threshold, split_count
from llm_consortium.evaluation.simulator import arbiter_xml


def test_every_setting_is_a_flag_of_run_and_save_with_its_help():
    for command in ("run", "save"):
        help_text = " ".join(invoke("consortium", command, "--help").stdout.split())
        for setting in ConsortiumConfig.settings():
            flag = setting.metadata["flag"] or "--" + setting.name.replace("_", "-")
            assert flag in help_text, (command, flag)
            assert " ".join(setting.metadata["help"].split()) in help_text, (command, setting.name)


def test_every_setting_set_by_flags_is_saved_shown_and_an_o_option(sim):
    sim.add("m1", reply="42")
    sim.add("judge", reply=arbiter_xml("42", 0.9))
    values = {"confidence_threshold": "0.7", "max_iterations": "4", "min_iterations": "2", "method": "vote",
              "timeout": "12.5", "attempts": "2", "max_concurrency": "5", "quorum": "1", "max_cost": "0.25", "stop_on": "both",
              "allow_unpriced": True, "strict": True, "adaptive": True, "embed": "some-embedder",
              "embed_threshold": "0.85", "min_p": "0.8"}
    flags = [part for name, value in values.items()
             for part in ("--" + name.replace("_", "-"), value)[:1 if value is True else 2]]  # True: a flag
    result = invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge", "--system", "Be brief.", *flags)
    assert result.exit_code == 0, result.output
    shown = invoke("consortium", "show", "c").stdout.splitlines()
    expected = ConsortiumConfig(models=["m1"], arbiter="judge", **values)
    named = {s.name for s in ConsortiumConfig.settings()} - {"arbiter", "system_prompt"}
    assert set(values) == named  # a new setting is tried here too
    formatted = {"max_cost": "$0.25"}  # dollars are shown as dollars
    for name in named:
        value = formatted.get(name, getattr(expected, name))
        assert f"{name.replace('_', ' ').capitalize()}: {value}" in shown, (name, shown)
    shown = "\n".join(shown)
    assert "Arbiter: judge" in shown and "System prompt: Be brief." in shown
    options = llm.get_model("c").Options.model_fields
    assert {s.name for s in ConsortiumConfig.settings() if s.metadata["option"]} | {"progress"} == set(options)
    assert options["max_iterations"].description == "Most rounds"


def test_a_bad_value_is_the_same_one_line_from_a_flag_and_from_o(sim):
    sim.add("m1", reply="42")
    sim.add("judge", reply=arbiter_xml("42", 0.9))
    assert invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    flag = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--max-iterations", "many")
    option = invoke("-m", "c", "q", "-o", "max_iterations", "0")
    assert flag.exit_code == 1 and flag.stderr.strip() == "Error: max iterations must be a whole number, got 'many'"
    assert option.exit_code == 1 and option.stderr.strip() == "Error: max iterations must be at least 1, got 0"
    assert sim.requests == []


@pytest.mark.parametrize("value, expected", [
    (0, 0.0), (0.8, 0.8), (1, 1.0), ("0.55", 0.55), (80, 0.8), ("80", 0.8), (80.0, 0.8), (100, 1.0),
    ("80%", 0.8), (" 80% ", 0.8), ("1.5%", 0.015), ("0%", 0.0), ("100%", 1.0),
])
def test_threshold_accepts_a_fraction_a_whole_percentage_or_a_percentage_with_a_sign(value, expected):
    assert parse_threshold(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", [1.5, "1.5", 150, 101, -1, -0.1, "abc", "", "%", "150%", "-5%", "nan", "inf", None])
def test_threshold_refuses_anything_else_in_one_line(value):
    with pytest.raises(ConsortiumConfigError) as raised:
        parse_threshold(value)
    message = str(raised.value)
    assert "\n" not in message and "between 0 and 1" in message and repr(value) in message


def test_a_threshold_of_1_5_is_refused_from_a_flag_and_from_o(sim):
    sim.add("m1", reply="42")
    sim.add("judge", reply=arbiter_xml("42", 0.9))
    assert invoke("consortium", "save", "c", "-m", "m1", "--arbiter", "judge").exit_code == 0
    flag = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--confidence-threshold", "1.5")
    option = invoke("-m", "c", "q", "-o", "confidence_threshold", "1.5")
    assert flag.exit_code == 1 and option.exit_code == 1
    assert flag.stderr.strip().startswith("Error: Confidence threshold must be between 0 and 1")
    assert len(flag.stderr.strip().splitlines()) == 1
    assert option.stderr == flag.stderr
    assert sim.requests == []


@pytest.mark.parametrize("spec, known, expected", [
    ("gpt-4", None, ("gpt-4", 1)),
    ("gpt-4:3", None, ("gpt-4", 3)),
    ("llama3:8b", None, ("llama3:8b", 1)),  # a tag, not a count
    ("m:0", None, ("m:0", 1)),  # no member would be asked: the spec is a model id
    ("qwen:2:4", None, ("qwen:2", 4)),
    ("qwen:2", {"qwen:2"}, ("qwen:2", 1)),  # a model id that ends in digits is never split
    ("qwen:2:2", {"qwen:2"}, ("qwen:2", 2)),
])
def test_split_count(spec, known, expected):
    assert split_count(spec, known) == expected


def test_from_dict_builds_a_config_from_a_stored_mapping():
    stored = {"models": ["m1", "m2:2"], "arbiter": "judge", "confidence_threshold": "80%", "max_iterations": 4,
              "min_iterations": 2, "system_prompt": "Be brief.", "method": "vote", "timeout": 30, "attempts": 2,
              "max_concurrency": 8, "quorum": 2, "max_cost": "$0.50"}
    config = ConsortiumConfig.from_dict({**stored, "added_by_a_later_version": True, "quorum": None})
    assert config.models == ["m1", "m2:2"] and config.arbiter == "judge" and config.system_prompt == "Be brief."
    assert (config.confidence_threshold, config.max_iterations, config.min_iterations) == (0.8, 4, 2)
    assert (config.method, config.timeout, config.attempts, config.max_concurrency) == ("vote", 30.0, 2, 8)
    assert config.quorum is None and config.max_cost == 0.5  # None is "not set": the default
    assert ConsortiumConfig.from_dict(config.to_dict()) == config  # what save stores reads back the same
    assert ConsortiumConfig.from_dict({"models": {"a": 1, "b": 3}, "arbiter": "a"}).models == ["a", "b:3"]  # 0.3


# The default consortium (`llm consortium default NAME`) applies only without -m (issue 19, item 7).


@pytest.fixture
def strict_default(sim):
    """A default consortium that would show itself: threshold 0.99 and 3
    rounds (an arbiter at 0.9 never reaches it), its own arbiter and system
    prompt."""
    sim.add("m1", reply="42")
    sim.add("m2", reply="42")
    sim.add("judge", reply=arbiter_xml("42", 0.9))
    sim.add("strict-judge", reply=arbiter_xml("42", 0.9))
    saved = invoke("consortium", "save", "strict", "-m", "m2", "--arbiter", "strict-judge", "--confidence-threshold",
                   "0.99", "--max-iterations", "3", "--system", "Be strict.")
    assert saved.exit_code == 0 and invoke("consortium", "default", "strict").exit_code == 0
    return sim


def test_with_m_nothing_comes_from_the_default_consortium(strict_default):
    """It took strict's threshold and rounds: 3 rounds where 1 was asked for."""
    result = invoke("consortium", "q", "-m", "m1", "--arbiter", "judge", "--no-raw", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(strict_default.calls("m1")) == 1 and len(strict_default.calls("judge")) == 1
    assert strict_default.calls("m2") == strict_default.calls("strict-judge") == []
    config = json.loads(result.stdout)["metadata"]
    assert config["confidence_threshold"] == 0.8 and config["max_iterations"] == 3  # the documented defaults
    assert config["system_prompt"] is None
    assert "Be strict." not in strict_default.calls("m1")[0].body["messages"][0]["content"]


def test_with_m_and_no_arbiter_the_arbiter_is_the_documented_default_not_the_default_consortiums(strict_default):
    result = invoke("consortium", "q", "-m", "m1", "--no-raw")
    assert result.exit_code == 1
    assert "claude-3-opus-20240229" in result.stderr and "built-in default" in result.stderr
    assert strict_default.requests == []


def test_without_m_the_default_consortium_applies_and_flags_override_it(strict_default):
    result = invoke("consortium", "q", "--max-iterations", "1", "--arbiter", "judge", "--no-raw", "--json")
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)["metadata"]
    assert config["models"] == ["m2"] and config["arbiter"] == "judge"  # --arbiter overrides
    assert config["max_iterations"] == 1 and config["confidence_threshold"] == 0.99  # the rest is strict's
    assert config["system_prompt"] == "Be strict."
    assert len(strict_default.calls("m2")) == 1 and strict_default.calls("m1") == []


def test_default_help_states_the_rule():
    text = " ".join(invoke("consortium", "default", "--help").stdout.split())
    assert ("Without -m, 'llm consortium run' uses the default consortium's settings, and flags override them. "
            "With -m, nothing comes from it: every setting not given, the arbiter included, takes its "
            "documented default.") in text
