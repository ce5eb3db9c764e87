"""Integrity checks for saved routed SAEs: fail on load with a message that says what is wrong and where.

SAELens's own loaders read whatever they are given and fail deep inside safetensors or `load_state_dict`. These
checks run first, in the plugin's validating converters (`sae_lens_routing.loading.loaders`), and the key/shape check
also runs on SAELens's default path through `RouteSAE.process_state_dict_for_loading`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sae_lens.constants import SAE_CFG_FILENAME
from sae_lens.registry import get_sae_class
from safetensors import SafetensorError, safe_open

from sae_lens_routing.saes.state_dict import IntegrityError, check_route_state_dict

# cfg.json fields a routesae SAE cannot be built right without (SAELens would fill k with a default).
ROUTE_CFG_FIELDS = ("d_in", "d_sae", "k", "hook_names")


def read_cfg_json(folder: str | Path) -> dict[str, Any]:
    """The folder's cfg.json as a dict; a clear error when it is missing or not a JSON object."""
    path = Path(folder) / SAE_CFG_FILENAME
    if not Path(folder).is_dir():
        raise IntegrityError(f"SAE folder not found: {folder}")
    if not path.is_file():
        raise IntegrityError(
            f"{path} is missing: a SAELens SAE folder holds {SAE_CFG_FILENAME} and sae_weights.safetensors "
            "(what save_inference_model writes)"
        )
    return read_json_object(path)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (cfg.json, the official sidecar); errors name the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path} is not valid JSON (corrupted or truncated): {e}") from e
    if not isinstance(data, dict):
        raise IntegrityError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_architecture(cfg: Mapping[str, Any], source: str) -> str:
    """The cfg's architecture, which must be registered with SAELens (the plugin registers "routesae")."""
    arch = cfg.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise IntegrityError(f"{source}: cfg has no 'architecture' field (expected e.g. 'routesae')")
    try:
        get_sae_class(arch)
    except KeyError:
        raise IntegrityError(
            f"{source}: architecture {arch!r} is not registered with SAELens. For routed SAEs run "
            "`import sae_lens_routing` first (it registers 'routesae'); other architectures need the plugin "
            "that defines them."
        ) from None
    if "hook_names" in cfg and arch != "routesae":
        raise IntegrityError(
            f"{source}: cfg has hook_names (a routed SAE's several layers) but architecture {arch!r}; a RouteSAE "
            "folder must say architecture 'routesae'"
        )
    return arch


def read_safetensors(
    path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (optionally cast to dtype); `safe_open` validates the framing (header,
    offsets, length), and its error comes back as an IntegrityError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:  # type: ignore[no-untyped-call]
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except SafetensorError as e:
        with path.open("rb") as raw:
            if raw.read(4).startswith((b"PK\x03\x04", b"\x80")):
                raise IntegrityError(
                    f"{path} is not a safetensors file: it looks like a torch.save/pickle file, which is never "
                    "unpickled here; re-save the weights with safetensors (save_inference_model does)"
                ) from e
        raise IntegrityError(f"{path} is truncated or corrupted (not a valid safetensors file): {e}") from e
    return tensors if dtype is None else {k: t.to(dtype) for k, t in tensors.items()}


def check_weight_values(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Weights that load but cannot be a trained SAE: any NaN/Inf, or every tensor all zeros."""
    for key, value in state_dict.items():
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            plural = "s" if bad > 1 else ""
            raise IntegrityError(f"{key} in {source} has {bad} non-finite value{plural} (NaN/Inf)")
    if state_dict and not any(bool(v.any()) for v in state_dict.values()):
        raise IntegrityError(f"{source}: all weights are zero: not a trained SAE")


def check_route_cfg_and_weights(
    cfg: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], cfg_source: str, source: str
) -> None:
    """The routesae cfg fields the shapes depend on, then the weights (`source`) against them."""
    missing = [f for f in ROUTE_CFG_FIELDS if f not in cfg]
    if missing:
        raise IntegrityError(
            f"{cfg_source}: missing field {', '.join(missing)} (needed for architecture 'routesae')"
        )
    hook_names = cfg["hook_names"]
    if not isinstance(hook_names, list):
        raise IntegrityError(f"{cfg_source}: hook_names must be a list of hook names, got {hook_names!r}")
    check_weight_values(state_dict, source)  # first: it counts the bad values
    check_route_state_dict(
        state_dict,
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        n_layers=len(hook_names),
        source=source,
    )


def check_sparsity(sparsity: torch.Tensor, d_sae: int, source: str) -> None:
    """SAELens's sparsity file holds one log10 firing frequency per latent."""
    if tuple(sparsity.shape) != (d_sae,):
        raise IntegrityError(
            f"{source}: sparsity has shape {tuple(sparsity.shape)}, expected ({d_sae},) = (d_sae,)"
        )
