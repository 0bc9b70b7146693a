"""Dollars from tokens: each call is priced from its usage by genai-prices.

Why genai-prices: it is maintained by the Pydantic team, its price data is
checked against the providers' pages and versioned, it knows prices that
change with time or with the prompt's length, and it matches model names
loosely (``claude-3-5-sonnet-latest`` finds ``claude-3-5-sonnet``). We use
its bundled snapshot only: nothing is fetched at run time.

Which name is priced: a model registered in ``extra-openai-models.yaml`` by
its ``model_name`` (the name its provider knows, not the local alias); any
other model by the name its plugin sends to the provider. The provider is
taken from the plugin (OpenAI's own models, llm-anthropic, llm-gemini,
llm-mistral) or, for an OpenAI-compatible ``api_base``, from that URL when
genai-prices knows it (Groq, OpenRouter, ...); otherwise genai-prices picks
the provider whose model matches the name.

A price that cannot be found (a local model, a private fine-tune, a plugin
we cannot place) is unknown, never 0: ``call_cost`` returns None.

Importing genai-prices takes most of a second (pydantic, the price data),
so it is imported lazily, and ``warm()`` starts that import in a thread
when a run starts, well before its first call ends.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

from ..llm_adapter import OPENAI_MODELS_MODULE
from .results import Usage

# The provider of models from plugins whose provider is not in the model's name.
PLUGIN_PROVIDERS = {
    OPENAI_MODELS_MODULE: "openai",
    "llm_anthropic": "anthropic",
    "llm_gemini": "google",
    "llm_mistral": "mistral",
}


def warm() -> None:
    """Import genai-prices in the background so the first priced call does not wait for it."""
    threading.Thread(target=_prices, name="consortium-prices", daemon=True).start()


def _prices():
    try:
        import genai_prices
    except ImportError:  # genai-prices needs Python 3.11; without it every cost is unknown
        return None
    return genai_prices


def price_reference(model) -> tuple[str, dict] | None:
    """(the name to price, how to find its provider) for an llm model, or
    None when the model cannot be placed with a provider that sells it."""
    module = type(model).__module__
    plugin = next((p for p in PLUGIN_PROVIDERS if module == p or module.startswith(p + ".")), None)
    if plugin is None:
        return None
    name = getattr(model, "model_name", None) or getattr(model, "claude_model_id", None) \
        or getattr(model, "gemini_model_id", None) or model.model_id
    api_base = getattr(model, "api_base", None)
    if plugin == OPENAI_MODELS_MODULE and api_base:
        return name, {"provider_api_url": api_base}
    return name, {"provider_id": PLUGIN_PROVIDERS[plugin]}


@lru_cache(maxsize=256)
def _rate(name: str, provider: tuple) -> tuple | None:
    """Whether ``name`` has a price at this provider (or, failing that, any)."""
    prices = _prices()
    if prices is None:
        return None
    usage = prices.Usage(input_tokens=0, output_tokens=0)
    for where in (dict(provider), {}):
        try:
            prices.calc_price(usage, name, **where)
            return tuple(where.items())
        except LookupError:
            continue
    return None


def call_cost(model, input_tokens: int, output_tokens: int) -> float | None:
    """The dollars one call of ``model`` cost, or None when its price is unknown."""
    reference = price_reference(model)
    if reference is None:
        return None
    name, provider = reference
    where = _rate(name, tuple(sorted(provider.items())))
    if where is None:
        return None
    prices = _prices()
    usage = prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(prices.calc_price(usage, name, **dict(where)).total_price)


def rates(model) -> tuple[float, float] | None:
    """(dollars per prompt token, dollars per reply token) of ``model``, or
    None when its price is unknown. Read off a million tokens of each, so a
    price that grows with the prompt's length is taken at its higher tier."""
    per_million = call_cost(model, 1_000_000, 0), call_cost(model, 0, 1_000_000)
    if None in per_million:
        return None
    return per_million[0] / 1_000_000, per_million[1] / 1_000_000


def priced(model, input_tokens: int, output_tokens: int) -> Usage:
    """One call's tokens with their dollars, counted as unpriced when its price is unknown."""
    cost = call_cost(model, input_tokens, output_tokens)
    return Usage(input=input_tokens, output=output_tokens, cost=cost or 0.0, unpriced=int(cost is None))


# A call not made yet is estimated, never measured: its prompt at one token
# per four characters (the usual rule of thumb for English text; no
# tokenizer is loaded), and its reply at this many tokens, a typical
# answer's length.
CHARS_PER_TOKEN = 4
ASSUMED_REPLY_TOKENS = 500


def estimated_tokens(text: str) -> int:
    """The tokens ``text`` would take, at ``CHARS_PER_TOKEN`` characters a token."""
    return -(-len(text) // CHARS_PER_TOKEN)


def dollars(amount: float, exact: bool = False) -> str:
    """Dollars for reading: cents above a dollar ($1.24), two significant
    digits below it ($0.0031, $0.12), so a small cost never reads as $0.00.
    ``exact``: every digit, for an amount the user gave (a budget of $0.0125)."""
    if exact:
        return "$" + f"{amount:,.10f}".rstrip("0").rstrip(".")
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount <= 0:
        return "$0"
    amount = float(f"{amount:.2g}")  # rounded first, so that 0.000999 reads $0.001, not $0.00100
    decimals = max(2, 1 - math.floor(math.log10(amount)))
    text = f"{amount:.{decimals}f}"
    return "$" + (text.rstrip("0") if decimals > 2 else text)
