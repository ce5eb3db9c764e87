"""What a RouteSAE run is checked for, once, before any model compute; each message names the field."""

import netrc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from sae_lens.config import LanguageModelSAERunnerConfig

from sae_lens_routing.saes.config import RouteTrainingSAEConfig, refuse
from sae_lens_routing.saes.routed_activations import check_hooks_in_model

_D_MODEL_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
_PATH_FIELDS = {"output_path": True, "checkpoint_path": True, "cached_activations_path": False,
                "resume_from_checkpoint": False, "from_pretrained_path": False}  # field: written by the run


def validate_route_config(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """Refuse what a run would otherwise hit after loading the model, or mid-training."""
    refuse(_config_problems(cfg))


def _config_problems(cfg: LanguageModelSAERunnerConfig[Any]) -> Iterator[str | None]:
    if not isinstance(getattr(cfg, "sae", None), RouteTrainingSAEConfig):
        yield f"cfg.sae must be a RouteTrainingSAEConfig for RouteSAETrainingRunner, got {cfg!r:.80}"
    for name in ("device", "llm_device", "act_store_device"):
        value = str(getattr(cfg, name))
        try:
            if torch.device(value).type == "cuda" and not torch.cuda.is_available():
                yield f"CUDA requested ({name}={value!r}) but torch.cuda.is_available() is False"
        except RuntimeError:
            yield f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}"
    if not cfg.lr > 0:  # NaN fails too
        yield f"lr must be a number > 0 (an SAE trained at lr={cfg.lr} never moves)"
    if cfg.store_batch_size_prompts < 1:
        yield f"store_batch_size_prompts must be an integer >= 1, got {cfg.store_batch_size_prompts}"
    if cfg.output_path is not None and not str(cfg.output_path).strip():
        yield f"output_path must be a folder path, or null to save nothing, got {cfg.output_path!r}"
    positions, batch = range(cfg.context_size)[slice(*cfg.seqpos_slice)], cfg.train_batch_size_tokens
    if cfg.n_batches_in_buffer * len(positions) < batch:
        yield (f"the activation buffer holds n_batches_in_buffer * context_size = "
               f"{cfg.n_batches_in_buffer * len(positions)} tokens, fewer than train_batch_size_tokens="
               f"{batch}; raise n_batches_in_buffer to at least {-(-batch // len(positions))}")
    if cfg.training_tokens < batch:
        yield f"training_tokens={cfg.training_tokens} must be >= train_batch_size_tokens={batch}"
    if cfg.prepend_bos and list(positions) == [0]:
        yield (f"context_size={cfg.context_size} with seqpos_slice={tuple(cfg.seqpos_slice)} and "
               "prepend_bos: true trains only on position 0, which is always the BOS token; raise "
               "context_size (e.g. 128) or set prepend_bos: false")
    if cfg.logger.log_to_wandb and not _wandb_can_log():
        yield ("logger.log_to_wandb is true (SAELens's default) but W&B has no API key (WANDB_API_KEY or "
               "`wandb login`) and WANDB_MODE is not offline: set logger.log_to_wandb: false (YAML; "
               "LoggingConfig(log_to_wandb=False) in Python), or log in to W&B")
    paths = run_paths(cfg)
    yield from path_problems(paths)
    for field, path, written in paths:  # outputs are renamed into place: the folder above must be writable
        folder = next(p for p in Path(path).expanduser().absolute().parents if p.exists())
        if written and not os.access(folder, os.W_OK | os.X_OK):
            yield (f"{field}={path!r} cannot be written: {folder} is read-only for this user; "
                   f"choose another {field}")
    if cfg.sae.end_to_end_tokens and cfg.use_cached_activations:  # None (the default): none when cached
        yield (f"sae.end_to_end_tokens={cfg.sae.end_to_end_tokens} needs the live model (the phase splices "
               "the SAE into its forward), but use_cached_activations is true: set sae.end_to_end_tokens: 0 "
               "or train live")


def validate_route_run(cfg: LanguageModelSAERunnerConfig[Any], model: Any | None) -> None:
    """The loaded model against the config: hook points, d_model, n_ctx (None: a cached run, no model)."""
    if model is None:
        return
    check_hooks_in_model(model, list(cfg.sae.hook_names), "sae.hook_names")
    d_model, n_ctx = getattr(model.cfg, "d_model", None), getattr(model.cfg, "n_ctx", None)
    refuse([
        d_model is not None and cfg.sae.d_in != d_model
        and any(h.endswith(_D_MODEL_HOOKS) for h in cfg.sae.hook_names)
        and f"sae.d_in must equal the model's d_model={d_model} for these hooks, got {cfg.sae.d_in}",
        n_ctx is not None and cfg.context_size > n_ctx
        and f"context_size must be <= the model's n_ctx={n_ctx}, got {cfg.context_size}",
    ])


def _wandb_can_log() -> bool:
    env = os.environ
    if (env.get("WANDB_API_KEY") or env.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun")
            or env.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes")):
        return True
    host = urlsplit(env.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return bool(netrc.netrc(env.get("NETRC") or str(Path.home() / ".netrc")).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


def run_paths(cfg: LanguageModelSAERunnerConfig[Any], prefix: str = "") -> list[tuple[str, str, bool]]:
    """(field, path, written) of every folder a run reads or writes."""
    return [(prefix + f, str(getattr(cfg, f)), w) for f, w in _PATH_FIELDS.items() if getattr(cfg, f, None)]


def path_problems(paths: list[tuple[str, str, bool]]) -> Iterator[str]:
    """A written folder must not equal, hold or lie in another run folder (resolved): it would delete it."""
    resolved = [(f, p, w, Path(p).expanduser().resolve()) for f, p, w in paths]
    for i, a in enumerate(resolved):
        for b in resolved[i + 1 :]:
            if not (a[2] or b[2]) or (a[3] != b[3] and a[3] not in b[3].parents and b[3] not in a[3].parents):
                continue
            inner, outer = (b, a) if a[3] in b[3].parents else (a, b)
            fix = inner if inner[2] else outer
            yield (f"{inner[0]}={inner[1]!r} {'equals' if a[3] == b[3] else 'lies inside'} "
                   f"{outer[0]}={outer[1]!r}; give {fix[0]} a folder of its own (a run never writes over or "
                   "into another folder it reads or writes: replacing it would delete that)")
