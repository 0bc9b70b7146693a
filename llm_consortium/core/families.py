"""Model families: an arbiter favours its own family's answers, even
anonymised (self-preference, Panickssery et al., arXiv 2404.13076), so a
consortium whose arbiter shares a family with a member is warned of it.

Two models are of one family when they come from one provider and their
names start with the same word. The provider is the one ``pricing`` prices
the model at: its plugin's (OpenAI's own models, llm-anthropic, llm-gemini,
llm-mistral), or the ``api_base`` of an OpenAI-compatible model; a model of
another plugin is placed by the plugin that registered it. The name is the
one its provider knows (``pricing.price_reference``), its last path part
(``openrouter/anthropic/claude-3-haiku`` is ``claude-3-haiku``), and the
family is its leading letters: ``gpt`` for gpt-4o and gpt-4o-mini,
``claude``, ``gemini``, ``llama``. A heuristic: two models a provider sells
under unrelated names (gpt-4o, o3) are not one family here.
"""

from __future__ import annotations

import re

_FAMILY = re.compile(r"[a-z]+")


def family(model) -> tuple[str, str] | None:
    """(provider, family) of an llm model, or None when its name starts with no letter."""
    from ..llm_adapter import OPENAI_MODELS_MODULE
    from .pricing import PLUGIN_PROVIDERS, price_reference

    module = type(model).__module__
    plugin = next((p for p in PLUGIN_PROVIDERS if module == p or module.startswith(p + ".")), None)
    api_base = getattr(model, "api_base", None)
    if plugin == OPENAI_MODELS_MODULE and api_base:
        provider = str(api_base)
    else:
        provider = PLUGIN_PROVIDERS.get(plugin) or module.partition(".")[0]
    name = (price_reference(model) or (model.model_id,))[0]
    found = _FAMILY.match(str(name).lower().rsplit("/", 1)[-1])
    return (provider, found.group(0)) if found else None


def same_family(arbiter: str, members: list[str], handles: dict) -> list[str]:
    """The members (model ids, resolved in ``handles``) of the arbiter's family, each once."""
    own = family(handles[arbiter].model)
    if own is None:
        return []
    return [m for m in dict.fromkeys(members) if m != arbiter and family(handles[m].model) == own] + (
        [arbiter] if arbiter in members else [])


def family_warning(models: list[str], arbiter: str) -> str | None:
    """The one-line warning for a consortium of ``models`` (member specs,
    ``m:2`` counts allowed) whose ``arbiter`` shares a family with a member,
    or None; None too when a model is not installed (any more)."""
    from .config import ConsortiumConfigError, split_count
    from .handles import resolve_models

    try:
        handles = resolve_models(models + [arbiter])
        members = [split_count(spec, set(handles))[0] for spec in models]
    except ConsortiumConfigError:
        return None
    shared = same_family(arbiter, members, handles)
    if not shared:
        return None
    _, name = family(handles[arbiter].model)
    return (f"Warning: the arbiter {arbiter} is of the same family ({name}) as {', '.join(shared)}: judges favour "
            "their own family's answers; an arbiter of another family is fairer")
