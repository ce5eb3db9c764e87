"""SAELens converters for checkpoints of the official RouteSAE code, on the Hub or on disk.

The official code saves a bare `torch.save(state_dict)` and keeps k, the routed layers, the routing mode and the
router input on its command line. A folder therefore holds the `.pt` file plus a small sidecar,
`routesae_official.json`::

    {"checkpoint": "RouteSAE_1B_k64.pt", "k": 64, "n_layers": 16, "routing": "hard", "router_input": "sum"}

`n_layers` is the language model's layer count, as the official `--n_layers` flag (the routed hooks are then
the paper's, `paper_hook_names(n_layers)`); give `hook_names` instead to name them. `model_name` and
`topk_relu` are optional. Sidecar fields may also come from `cfg_overrides` (e.g. a registry entry's
`config_overrides`), which win over the file. Use::

    SAE.load_from_disk(folder, converter=official_disk_loader)
    SAE.from_pretrained(repo_id, folder, converter=official_huggingface_loader)

The `.pt` is read with `weights_only=True` (`sae_lens_routing.loading.official`): a file pickling anything but
tensors is refused, never unpickled.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.loading.integrity import IntegrityError, check_weight_values, read_json_object
from sae_lens_routing.loading.loaders import download_hub_files
from sae_lens_routing.loading.official import (
    convert_official_state_dict,
    official_cfg_dict,
    read_official_state_dict,
)
from sae_lens_routing.saes.config import ROUTER_INPUTS, ROUTING_MODES
from sae_lens_routing.saes.layers import paper_hook_names

OFFICIAL_SIDECAR_FILENAME = "routesae_official.json"
SIDECAR_FIELDS = (
    "checkpoint",
    "k",
    "n_layers",
    "hook_names",
    "routing",
    "router_input",
    "topk_relu",
    "model_name",
)


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sidecar fields, cfg overrides such as device/dtype) from a converter's cfg_overrides."""
    overrides = dict(overrides or {})
    sidecar = {k: overrides.pop(k) for k in SIDECAR_FIELDS if k in overrides}
    return sidecar, overrides


def read_sidecar(path: Path | None, overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """Sidecar dict (file, then overrides), validated; each message names the field."""
    sidecar = read_json_object(path) if path is not None else {}
    sidecar.update(overrides)
    unknown = sorted(set(sidecar) - set(SIDECAR_FIELDS))
    if unknown:
        raise ValueError(f"{source}: unknown sidecar fields {unknown}; allowed: {list(SIDECAR_FIELDS)}")
    checkpoint = sidecar.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint.endswith(".pt") or "/" in checkpoint:
        raise ValueError(
            f"{source}: 'checkpoint' must name the .pt file in the same folder, got {checkpoint!r}"
        )
    k = sidecar.get("k")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{source}: 'k' must be a positive integer (the official --k), got {k!r}")
    has_hooks, has_layers = "hook_names" in sidecar, "n_layers" in sidecar
    if has_hooks == has_layers:
        raise ValueError(
            f"{source}: give exactly one of 'hook_names' (the routed hooks) or 'n_layers' (the model's layer "
            "count, as the official --n_layers)"
        )
    if has_layers:
        n = sidecar.pop("n_layers")
        if not isinstance(n, int) or isinstance(n, bool) or n < 4:
            raise ValueError(
                f"{source}: 'n_layers' must be the model's layer count (an integer >= 4), got {n!r}"
            )
        sidecar["hook_names"] = paper_hook_names(n)
    if sidecar.setdefault("routing", "hard") not in ROUTING_MODES:
        raise ValueError(f"{source}: 'routing' must be one of {ROUTING_MODES}, got {sidecar['routing']!r}")
    if sidecar.setdefault("router_input", "sum") not in ROUTER_INPUTS:
        raise ValueError(
            f"{source}: 'router_input' must be one of {ROUTER_INPUTS}, got {sidecar['router_input']!r}"
        )
    return sidecar


def convert_official_folder(
    checkpoint_path: Path, sidecar: dict[str, Any], device: str, cfg_overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """cfg dict (metadata.sae_lens_version >= 6, so SAELens keeps it as is) and SAELens-named weights."""
    state = read_official_state_dict(checkpoint_path)
    converted, d_in, d_sae = convert_official_state_dict(state, len(sidecar["hook_names"]))
    check_weight_values(converted, str(checkpoint_path))
    cfg = official_cfg_dict(
        d_in=d_in,
        d_sae=d_sae,
        hook_names=sidecar["hook_names"],
        k=sidecar["k"],
        routing=sidecar["routing"],
        router_input=sidecar["router_input"],
        topk_relu=bool(sidecar.get("topk_relu", False)),
        device=device,
        model_name=sidecar.get("model_name"),
    )
    cfg.update(cfg_overrides)
    dtype = getattr(torch, str(cfg["dtype"]).removeprefix("torch."))
    return cfg, {k: v.to(device=device, dtype=dtype) for k, v in converted.items()}


def official_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens disk-protocol converter for a folder holding an official `.pt` and its sidecar."""
    folder = Path(path)
    if not folder.is_dir():
        raise IntegrityError(f"official RouteSAE folder not found: {folder}")
    side_overrides, cfg_overrides = split_overrides(cfg_overrides)
    sidecar_path = folder / OFFICIAL_SIDECAR_FILENAME
    if not sidecar_path.is_file() and "checkpoint" not in side_overrides:
        raise IntegrityError(
            f"{sidecar_path} is missing (it names the .pt and gives k and the routed layers)"
        )
    sidecar = read_sidecar(sidecar_path if sidecar_path.is_file() else None, side_overrides, str(folder))
    return convert_official_folder(folder / sidecar["checkpoint"], sidecar, device, cfg_overrides)


def official_huggingface_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    revision: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], None]:
    """SAELens Hugging Face-protocol converter for official checkpoints (no sparsity: the official code
    keeps none)."""
    side_overrides, cfg_overrides = split_overrides(cfg_overrides)
    fetch = functools.partial(
        download_hub_files, repo_id, folder_name, force_download=force_download, revision=revision
    )
    # a sidecar is optional only when the overrides (a release's config_overrides) say everything
    sidecar_name = (OFFICIAL_SIDECAR_FILENAME,)
    names = ((), sidecar_name) if "checkpoint" in side_overrides else (sidecar_name, ())
    sidecar_path = fetch(*names) / OFFICIAL_SIDECAR_FILENAME
    source = f"{repo_id}/{folder_name}"
    sidecar = read_sidecar(sidecar_path if sidecar_path.is_file() else None, side_overrides, source)
    checkpoint = fetch((sidecar["checkpoint"],)) / sidecar["checkpoint"]
    cfg, state = convert_official_folder(checkpoint, sidecar, device, cfg_overrides)
    return cfg, state, None
