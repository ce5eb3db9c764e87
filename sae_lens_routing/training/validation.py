"""Checks on a RouteSAE training run that must fail before any model compute, naming the field.

`validate_route_config` holds every check that needs no model (the CLI runs it before loading anything);
`validate_route_run` adds the checks against the loaded model (the runner runs it once the model is there)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from sae_lens.config import LanguageModelSAERunnerConfig

from sae_lens_routing.saes.config import RouteTrainingSAEConfig

_D_MODEL_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out")


def validate_route_config(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """Raise ValueError for what a RouteSAE run would otherwise hit after loading the model, or mid-training.

    The SAE config's own fields (k <= d_sae, the hook list's shape...) are checked when it is built."""
    if not isinstance(cfg, LanguageModelSAERunnerConfig):
        raise ValueError(f"cfg must be a LanguageModelSAERunnerConfig, got {type(cfg).__name__}")
    if not isinstance(cfg.sae, RouteTrainingSAEConfig):
        raise ValueError(
            f"cfg.sae must be a RouteTrainingSAEConfig for RouteSAETrainingRunner, got {type(cfg.sae).__name__}"
        )
    _validate_devices(cfg)
    if cfg.output_path is not None and not str(cfg.output_path).strip():
        raise ValueError(f"output_path must be a folder path, or null to save nothing, got {cfg.output_path!r}")
    _validate_buffer(cfg)
    _validate_wandb(cfg)
    if cfg.sae.end_to_end_tokens and cfg.use_cached_activations:
        raise ValueError(
            f"sae.end_to_end_tokens={cfg.sae.end_to_end_tokens} needs the live model (the phase splices the SAE into "
            "its forward), but use_cached_activations is true: set sae.end_to_end_tokens: 0 or train live"
        )


def validate_route_run(cfg: LanguageModelSAERunnerConfig[Any], model: Any | None) -> None:
    """`validate_route_config` plus the model checks (hook points, d_model, n_ctx).

    `model=None` (a run from an activation cache, which loads no model) checks only the config itself."""
    validate_route_config(cfg)
    if model is not None:
        _validate_against_model(cfg, model)


def _validate_devices(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """A CUDA device on a machine without one otherwise fails late and obscurely (pin_memory, .to())."""
    for name in ("device", "llm_device", "act_store_device"):
        value = str(getattr(cfg, name))
        try:
            device = torch.device(value)
        except RuntimeError as e:
            raise ValueError(
                f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}"
            ) from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"CUDA requested ({name}={value!r}) but torch.cuda.is_available() is False")


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


def _validate_wandb(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """SAELens defaults `log_to_wandb` to true; without credentials `wandb.init` fails after the model load with
    a long traceback. Offline/disabled modes, an API key in the environment or in netrc (`wandb login`) pass."""
    if not cfg.logger.log_to_wandb:
        return
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get(
        "WANDB_API_KEY"
    ):
        return
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        if netrc.netrc(os.environ.get("NETRC") or str(Path.home() / ".netrc")).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ValueError(
        "logger.log_to_wandb is true (SAELens's default) but W&B has no API key (WANDB_API_KEY or `wandb login`) "
        "and WANDB_MODE is not offline: set logger.log_to_wandb: false (YAML; LoggingConfig(log_to_wandb=False) "
        "in Python), or log in to W&B"
    )
