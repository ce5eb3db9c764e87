"""SAELens's own loaders for SAELens-format folders, checked once on load (naming the file and the field)."""

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.loading.pretrained_sae_loaders import (
    get_sae_lens_config_from_disk,
    load_safetensors_weights,
    sae_lens_disk_loader,
)
from sae_lens.registry import SAE_CLASS_REGISTRY
from safetensors import SafetensorError

from sae_lens_routing.saes.config import (
    ARCHITECTURE,
    CheckedState,
    IntegrityError,
    RouteTrainingSAEConfig,
    check_route_state_dict,
)

FILES = (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME)


def _cfg_problem(cfg: dict[str, Any], cfg_file: Path) -> str | None:
    arch, missing = cfg.get("architecture"), [f for f in ("d_in", "d_sae", "k", "hook_names") if f not in cfg]
    if arch not in SAE_CLASS_REGISTRY:
        return (f"{cfg_file}: architecture {arch!r} is not registered with SAELens. For routed SAEs run "
                "`import sae_lens_routing` first (it registers 'routesae')")
    if "hook_names" in cfg and arch != ARCHITECTURE:
        return f"{cfg_file}: cfg has hook_names (a routed SAE's) but architecture {arch!r}, not 'routesae'"
    if arch == ARCHITECTURE and missing:
        return f"{cfg_file}: missing field {', '.join(missing)} (needed for architecture 'routesae')"
    return None


def read_checked_sae_folder(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None, weights: bool = True
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """cfg, weights and log-sparsity (or None) of a folder, checked once; `weights=False`: the cfg alone."""
    cfg_file, weights_file, sparsity_file = map(Path(path).joinpath, FILES)
    cfg, state, sparsity, problem, error = {}, CheckedState(), None, None, None
    try:
        if missing := [f for f in (cfg_file, weights_file)[: 1 + weights] if not f.is_file()]:
            problem = f"{missing[0]} is missing: a SAE folder holds {' and '.join(FILES[:2])}"
        elif not weights:
            cfg = get_sae_lens_config_from_disk(path, device, cfg_overrides)
        else:
            cfg, loaded = sae_lens_disk_loader(path, device, cfg_overrides)
            state.update(loaded)
            if sparsity_file.is_file():
                sparsity = load_safetensors_weights(sparsity_file, device)["sparsity"]
    except (ValueError, SafetensorError, KeyError) as e:  # JSONDecodeError is a ValueError
        error, bad = e, {KeyError: sparsity_file, SafetensorError: weights_file}.get(type(e), cfg_file)
        with bad.open("rb") as f:
            pickled = bad == weights_file and f.read(4).startswith((b"PK\x03\x04", b"\x80"))
        problem = f"{bad} is " + (
            "not a safetensors file: it looks like a torch.save/pickle file, which is never unpickled here"
            if pickled else f"truncated or corrupted (not a valid file): {e}")
    problem = problem or _cfg_problem(cfg, cfg_file)
    if not problem and weights and cfg["architecture"] == ARCHITECTURE:
        check_route_state_dict(state, cfg["d_in"], cfg["d_sae"], len(cfg["hook_names"]), str(weights_file))
    if not problem and sparsity is not None and tuple(sparsity.shape) != (cfg["d_sae"],):
        problem = f"{sparsity_file}: sparsity has shape {tuple(sparsity.shape)}, expected ({cfg['d_sae']},)"
    if problem:
        raise IntegrityError(problem) from error
    known = {f.name for f in dataclasses.fields(RouteTrainingSAEConfig)} | {"architecture"}
    saved = json.loads(cfg_file.read_text(encoding="utf-8"))  # SAELens's loader adds fields of its own
    if cfg["architecture"] == ARCHITECTURE and (unknown := sorted(set(saved) - known)):
        warnings.warn(f"{cfg_file}: unknown fields {unknown} are ignored (a typo, or a newer version's)",
                      stacklevel=2)
    return cfg, state, sparsity


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path} is not valid JSON (corrupted or truncated): {e}") from e
    if not isinstance(data, dict):
        raise IntegrityError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_cfg_json(folder: str | Path) -> dict[str, Any]:
    return read_checked_sae_folder(folder, weights=False)[0]


def route_sae_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens disk-protocol converter: `SAE.load_from_disk(path, converter=route_sae_disk_loader)`."""
    return read_checked_sae_folder(path, device, cfg_overrides)[:2]  # type: ignore[return-value]


def download_hub_files(repo_id: str, folder: str, required: tuple[str, ...], optional: tuple[str, ...] = (),
                       **kwargs: Any) -> Path:
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    patterns = [prefix + name for name in (*required, *optional)]
    local = Path(snapshot_download(repo_id, allow_patterns=patterns, **kwargs)) / prefix
    if missing := [name for name in required if not (local / name).is_file()]:
        raise IntegrityError(f"{repo_id}: {prefix + missing[0]} not found (in the repo or offline cache)")
    return local


def route_sae_huggingface_loader(
    repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None, revision: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:  # fmt: skip
    """SAELens Hugging Face-protocol converter: `SAE.from_pretrained(repo_id, sae_id, converter=...)`."""
    local = download_hub_files(repo_id, folder_name, FILES[:2], FILES[2:], force_download=force_download,
                               revision=revision)
    return read_checked_sae_folder(local, device, cfg_overrides)
