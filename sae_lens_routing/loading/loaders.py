"""Validating SAELens converters for SAEs saved in SAELens's own format (cfg.json + sae_weights.safetensors).

They implement the disk and Hugging Face protocols of `sae_lens.loading.pretrained_sae_loaders`, so they plug
into SAELens's unchanged entry points::

    SAE.load_from_disk(path, converter=route_sae_disk_loader)
    SAE.from_pretrained(repo_id, sae_id, converter=route_sae_huggingface_loader)

They read the same files as SAELens's default loaders, but check them first (`sae_lens_routing.loading.integrity`): a
missing cfg.json, an unregistered architecture, a truncated or corrupted safetensors file, weights whose keys or
shapes disagree with the config, NaN weights, or a sparsity file of the wrong size each fail with a message
naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.util import str_to_dtype

from sae_lens_routing.loading.integrity import (
    IntegrityError,
    check_architecture,
    check_route_cfg_and_weights,
    check_sparsity,
    read_cfg_json,
    read_safetensors,
)
from sae_lens_routing.saes.config import ARCHITECTURE


def read_checked_sae_folder(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """cfg dict, state dict and log-sparsity (None without a sparsity file) of a checked SAE folder."""
    path = Path(path)
    cfg = {**read_cfg_json(path), "device": device, **(cfg_overrides or {})}
    arch = check_architecture(cfg, str(path))
    weights_path = path / SAE_WEIGHTS_FILENAME
    dtype = str_to_dtype(cfg.get("dtype", "float32"))
    state = read_safetensors(weights_path, device=device, dtype=dtype)
    if arch == ARCHITECTURE:
        check_route_cfg_and_weights(cfg, state, str(path / SAE_CFG_FILENAME), str(weights_path))
    sparsity = None
    sparsity_path = path / SPARSITY_FILENAME
    if sparsity_path.is_file():
        tensors = read_safetensors(sparsity_path, device=device)
        if "sparsity" not in tensors:
            raise IntegrityError(f"{sparsity_path} has no 'sparsity' tensor (keys: {sorted(tensors)})")
        sparsity = tensors["sparsity"]
        check_sparsity(sparsity, int(cfg["d_sae"]), str(sparsity_path))
    return cfg, state, sparsity


def route_sae_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens disk-protocol converter: `SAE.load_from_disk(path, converter=route_sae_disk_loader)`."""
    cfg, state, _ = read_checked_sae_folder(path, device, cfg_overrides)
    return cfg, state


def download_hub_files(
    repo_id: str,
    folder_name: str,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    *,
    force_download: bool = False,
    revision: str | None = None,
) -> Path:
    """The local copy of `folder_name` in a Hub repo with the named files fetched: the one Hub download of the
    plugin, through `snapshot_download` (so huggingface_hub's cache, offline mode and revisions apply).

    A required file that is absent (from the repo, or from the cache when offline) fails naming it.
    """
    prefix = f"{folder_name.strip('/')}/" if folder_name.strip("/") else ""
    snapshot = Path(
        snapshot_download(
            repo_id,
            allow_patterns=[prefix + name for name in (*required, *optional)],
            revision=revision,
            force_download=force_download,
        )
    )
    for name in required:
        if not (snapshot / prefix / name).is_file():
            raise IntegrityError(
                f"{repo_id}: {prefix + name} not found (in the Hub repo, or in the local cache when offline)"
            )
    return snapshot / prefix


def route_sae_huggingface_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    revision: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """SAELens Hugging Face-protocol converter:
    `SAE.from_pretrained(repo_id, sae_id, converter=route_sae_huggingface_loader)`."""
    local = download_hub_files(
        repo_id, folder_name, (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME), (SPARSITY_FILENAME,),
        force_download=force_download, revision=revision,
    )  # fmt: skip
    return read_checked_sae_folder(local, device, cfg_overrides)
