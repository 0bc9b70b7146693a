"""Every call is priced from its usage, through llm's real client: a model in
extra-openai-models.yaml by its model_name, an unknown one as unknown, never 0."""

import pytest

from llm_consortium import ConsortiumOrchestrator
from llm_consortium.evaluation.simulator import arbiter_xml

genai_prices = pytest.importorskip("genai_prices")


def expected(model_ref, input_tokens, output_tokens):
    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(genai_prices.calc_price(usage, model_ref).total_price)


def run(models, arbiter="judge"):
    orchestrator = ConsortiumOrchestrator(models=models, arbiter=arbiter, retry_backoff=0.01)
    return orchestrator.orchestrate_sync("What is the capital of France?")


def test_a_model_is_priced_by_its_model_name(sim):
    sim.add("cheap", model_name="gpt-4o-mini", reply="Paris is the capital.")
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("Paris.", 0.9))
    result = run(["cheap"])
    member = result["model_responses"][0]["tokens"]
    assert member["input"] > 0 and member["output"] == 4
    assert member["cost_usd"] == pytest.approx(expected("gpt-4o-mini", member["input"], member["output"]))
    usage = result["metadata"]["usage"]
    judge_tokens = (usage["input"] - member["input"], usage["output"] - member["output"])
    assert usage["cost_usd"] == pytest.approx(member["cost_usd"] + expected("gpt-4o", *judge_tokens))
    assert usage["unpriced"] == 0


def test_an_unknown_model_costs_unknown_not_zero(sim):
    sim.add("cheap", model_name="gpt-4o-mini", reply="Paris.")
    sim.add("homebrew", reply="Paris.")
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("Paris.", 0.9))
    result = run(["cheap", "homebrew"])
    by_model = {m["model"]: m["tokens"] for m in result["model_responses"]}
    assert by_model["homebrew"]["cost_usd"] is None
    assert by_model["homebrew"]["unpriced"] == 1
    assert by_model["cheap"]["cost_usd"] > 0
    usage = result["metadata"]["usage"]
    assert usage["cost_usd"] is None  # a total with an unknown part is unknown
    assert usage["priced_usd"] > by_model["cheap"]["cost_usd"]  # the judge's known part is kept apart
    assert usage["unpriced"] == 1


def test_no_reported_usage_is_unknown_cost(sim):
    sim.add("cheap", model_name="gpt-4o-mini", reply="Paris.", no_usage=True)
    sim.add("judge", model_name="gpt-4o", reply=arbiter_xml("Paris.", 0.9))
    result = run(["cheap"])
    tokens = result["model_responses"][0]["tokens"]
    assert tokens["cost_usd"] is None and tokens["unreported"] == 1


@pytest.mark.parametrize("amount, shown", [
    (1.237, "$1.24"), (1234.5, "$1,234.50"), (0.5, "$0.50"), (0.12, "$0.12"), (0.05, "$0.05"),
    (0.0031, "$0.0031"), (0.003149, "$0.0031"), (0.000999, "$0.001"), (0.0000031, "$0.0000031"), (0, "$0"),
])
def test_dollars_read_sensibly_and_a_small_cost_never_reads_as_zero(amount, shown):
    from llm_consortium.core.pricing import dollars

    assert dollars(amount) == shown


def test_a_budget_is_shown_with_every_digit_given():
    from llm_consortium.core.pricing import dollars

    assert [dollars(a, exact=True) for a in (0.0125, 25, 0.000001)] == ["$0.0125", "$25", "$0.000001"]
