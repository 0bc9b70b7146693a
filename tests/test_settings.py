"""Each setting is declared once, in ConsortiumConfig: the flags of `run` and
`save`, the -o options of a saved consortium and `show` all come from it."""

import llm
from click.testing import CliRunner
from llm.cli import cli

from llm_consortium.config import ConsortiumConfig
from simprovider import arbiter_xml


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


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
              "timeout": "12.5", "attempts": "2", "max_concurrency": "5", "quorum": "1", "max_cost": "0.25", "stop_on": "both"}
    flags = [part for name, value in values.items() for part in ("--" + name.replace("_", "-"), value)]
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
