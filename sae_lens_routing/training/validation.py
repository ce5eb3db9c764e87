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
    _validate_positions(cfg)
    paths = run_paths(cfg)
    check_disjoint_paths(paths)
    for field, path, written in paths:
        if written:
            check_writable(field, path)
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
        check_device(name, str(getattr(cfg, name)))


def check_device(name: str, value: str) -> None:
    """ValueError naming `name` unless `value` is a torch device this machine has."""
    try:
        device = torch.device(value)
    except RuntimeError as e:
        raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from e
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


def run_paths(cfg: LanguageModelSAERunnerConfig[Any], prefix: str = "") -> list[tuple[str, str, bool]]:
    """(field, path, written) of every folder a run reads or writes."""
    fields = [
        ("output_path", True),
        ("checkpoint_path", True),
        ("cached_activations_path", False),
        ("resume_from_checkpoint", False),
        ("from_pretrained_path", False),
    ]
    return [(prefix + f, str(getattr(cfg, f)), w) for f, w in fields if getattr(cfg, f, None)]


def check_disjoint_paths(paths: list[tuple[str, str, bool]]) -> None:
    """Refuse a written folder that equals, contains or lies inside another folder of the same run, compared
    resolved (`./a`, `a/` and symlinks alias): replacing it would delete the other. (SAELens appends a new run
    id to checkpoint_path, so a resumed checkpoint of an earlier run lies beside it, not inside.)"""
    resolved = [(f, p, w, Path(p).expanduser().resolve()) for f, p, w in paths]
    for i, a in enumerate(resolved):
        for b in resolved[i + 1 :]:
            if not (a[2] or b[2]) or (a[3] != b[3] and a[3] not in b[3].parents and b[3] not in a[3].parents):
                continue
            inner, outer = (b, a) if a[3] in b[3].parents else (a, b)
            how = "equals" if a[3] == b[3] else "lies inside"
            fix = inner if inner[2] else outer
            raise ValueError(
                f"{inner[0]}={inner[1]!r} {how} {outer[0]}={outer[1]!r}; give {fix[0]} a folder of its own (a run "
                "never writes over or into another folder it reads or writes: replacing it would delete that)"
            )


def check_writable(field: str, path: str) -> None:
    """A folder that cannot be written is refused now, not with a PermissionError after all the work. Outputs
    are renamed into place, so what must be writable is the nearest existing folder above the path."""
    folder = next(p for p in Path(path).expanduser().absolute().parents if p.exists())
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"{field}={path!r} cannot be written: {folder} is read-only for this user; choose another {field}"
        )


def _validate_positions(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """With BOS prepended, training positions that are only position 0 are all BOS: with exclude_special_tokens
    no token survives (the store would loop forever), without it the SAE trains on BOS alone."""
    positions = range(cfg.context_size)[slice(*cfg.seqpos_slice)]
    if cfg.prepend_bos and list(positions) == [0]:
        raise ValueError(
            f"context_size={cfg.context_size} with seqpos_slice={tuple(cfg.seqpos_slice)} and prepend_bos: true "
            "trains only on position 0, which is always the BOS token; raise context_size (e.g. 128) or set "
            "prepend_bos: false"
        )


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
