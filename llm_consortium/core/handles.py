"""A run's models, found before any call: each name resolved to llm's model
(async where there is one), their API keys checked, and each member's
share of the ``-o`` options validated by its own model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ConsortiumConfigError, UnknownModelsError, split_count

@dataclass
class ModelHandle:
    """A resolved llm model: the async implementation when there is one."""

    model_id: str
    model: Any
    is_async: bool


def resolve_models(names: list[str], given=()) -> dict[str, ModelHandle]:
    """Map every name (id or alias, with an optional ``:N`` count) to a model.

    Looks the registry up once, however many names: ``llm.get_model`` would
    re-run every plugin's ``register_models`` hook on each call. ``given``:
    llm model objects (sync or async) that llm's
    registry does not list, found by their ``model_id`` (a registered
    model of the same name is not used: the demo's models, which no
    ``extra-openai-models.yaml`` names); the registry is not read when they
    are all the run needs. Raises one
    ``ConsortiumConfigError`` naming every unknown model.
    """
    import llm

    async_models, sync_models = {}, {}
    for model in given:
        is_async = isinstance(model, (llm.AsyncModel, llm.AsyncKeyModel))
        (async_models if is_async else sync_models)[model.model_id] = model
    found = async_models.keys() | sync_models.keys()
    if any(split_count(name, found)[0] not in found for name in names):
        # What llm.get_model_aliases and get_async_model_aliases build, from
        # one run of the hooks instead of one each.
        for entry in llm.get_models_with_aliases():
            for name in {*entry.aliases, entry.model.model_id} - found:
                if entry.async_model:
                    async_models[name] = entry.async_model
                if entry.model:
                    sync_models[name] = entry.model
    known = set(async_models) | set(sync_models)
    handles, unknown = {}, []
    for name in names:
        model_id, _ = split_count(name, known)
        if model_id in async_models:
            handles[model_id] = ModelHandle(model_id, async_models[model_id], True)
        elif model_id in sync_models:
            handles[model_id] = ModelHandle(model_id, sync_models[model_id], False)
        elif model_id not in unknown:
            unknown.append(model_id)
    if unknown:
        raise UnknownModelsError(unknown)
    return handles


def check_keys(handles: dict[str, ModelHandle]) -> None:
    """Raise one ``ConsortiumConfigError`` naming every model whose API key is
    missing, so a run never pays for its members and then fails at the arbiter."""
    import llm

    missing = []
    for name, handle in handles.items():
        if getattr(handle.model, "needs_key", None):
            try:
                handle.model.get_key()
            except llm.NeedsKeyException:
                hint = handle.model.key_env_var or handle.model.needs_key
                missing.append(f"{name} ('llm keys set {handle.model.needs_key}' or ${hint})")
    if missing:
        raise ConsortiumConfigError(f"No API key for: {', '.join(missing)}")


def member_options(handles: dict[str, ModelHandle], options: dict) -> dict[str, dict]:
    """Each member model's share of ``options`` (``-o`` options the
    consortium does not define): those its model's Options class declares,
    validated by that class. An option no member accepts, or a value a
    member refuses, is one ``ConsortiumConfigError``."""
    import pydantic

    shares = {}
    for name, handle in handles.items():
        declared = handle.model.Options.model_fields
        share = {key: value for key, value in options.items() if key in declared}
        if not share:
            continue
        try:
            validated = handle.model.Options(**share)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            given = ", ".join(f"-o {key} {share[key]}" for key in error["loc"][:1] or share)
            raise ConsortiumConfigError(f"Invalid {given} for {name}: {error['msg']}") from None
        shares[name] = {key: getattr(validated, key) for key in share}
    unused = [key for key in options if not any(key in share for share in shares.values())]
    if unused:
        label = "option" if len(unused) == 1 else "options"
        raise ConsortiumConfigError(
            f"No member model accepts the {label} {', '.join(unused)} (see llm models --options)"
        )
    return shares
