"""Checks on a RouteSAE training run that must fail before any model compute, naming the field."""

from __future__ import annotations

from typing import Any

from sae_lens.config import LanguageModelSAERunnerConfig

from sae_lens_routing.saes.config import RouteTrainingSAEConfig

_D_MODEL_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out")


def validate_route_run(cfg: LanguageModelSAERunnerConfig[Any], model: Any | None) -> None:
    """Raise ValueError for config/model mismatches a RouteSAE run would otherwise hit mid-training.

    `model=None` (a run from an activation cache, which loads no model) checks only the config itself."""
    if not isinstance(cfg.sae, RouteTrainingSAEConfig):
        raise ValueError(
            f"cfg.sae must be a RouteTrainingSAEConfig for RouteSAETrainingRunner, got {type(cfg.sae).__name__}"
        )
    if model is not None:
        _validate_against_model(cfg, model)
    _validate_buffer(cfg)


def _validate_against_model(cfg: LanguageModelSAERunnerConfig[Any], model: Any) -> None:
    hook_dict = getattr(model, "hook_dict", {})
    missing = [h for h in cfg.sae.hook_names if h not in hook_dict]
    if missing:
        sample = [h for h in hook_dict if h.endswith("hook_resid_post")][:3] or list(hook_dict)[:3]
        raise ValueError(f"sae.hook_names {missing} are not hook points of the model (e.g. {sample})")
    d_model = getattr(getattr(model, "cfg", None), "d_model", None)
    if d_model is not None and any(h.endswith(_D_MODEL_HOOKS) for h in cfg.sae.hook_names):
        if cfg.sae.d_in != d_model:
            raise ValueError(
                f"sae.d_in must equal the model's d_model={d_model} for these hooks, got {cfg.sae.d_in}"
            )
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None and cfg.context_size > n_ctx:
        raise ValueError(f"context_size must be <= the model's n_ctx={n_ctx}, got {cfg.context_size}")


def _validate_buffer(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    training_context = len(range(cfg.context_size)[slice(*cfg.seqpos_slice)])
    buffer_tokens = cfg.n_batches_in_buffer * training_context
    if buffer_tokens < cfg.train_batch_size_tokens:
        raise ValueError(
            f"the activation buffer holds n_batches_in_buffer * context_size = {buffer_tokens} tokens, fewer than "
            f"train_batch_size_tokens={cfg.train_batch_size_tokens}; raise n_batches_in_buffer to at least "
            f"{-(-cfg.train_batch_size_tokens // training_context)}"
        )
    if cfg.training_tokens < cfg.train_batch_size_tokens:
        raise ValueError(
            f"training_tokens={cfg.training_tokens} must be >= train_batch_size_tokens={cfg.train_batch_size_tokens}"
        )
