"""Named releases of routed SAEs, and `load_route_sae`: one call for a release, a Hub repo or a local folder.

The plugin keeps its own registry, `pretrained_routed_saes.yaml`, in the shape of SAELens's
`pretrained_saes.yaml` (release -> repo_id, model, conversion_func, saes: [{id, path, ...}], config_overrides).
SAELens's directory is a cached module-level function with no registration hook; mutating it would be
monkeypatching, so releases resolve here and load through SAELens's public `converter=` parameter instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from sae_lens import SAE
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

from sae_lens_routing.loading.integrity import read_safetensors
from sae_lens_routing.loading.loaders import route_sae_disk_loader, route_sae_huggingface_loader
from sae_lens_routing.loading.official_hub import (
    OFFICIAL_SIDECAR_FILENAME,
    official_disk_loader,
    official_huggingface_loader,
)

RELEASES_FILENAME = "pretrained_routed_saes.yaml"
HF_CONVERTERS: dict[str, Callable[..., Any]] = {
    "sae_lens": route_sae_huggingface_loader,
    "routesae_official": official_huggingface_loader,
}


def _lookup(release: str, value: Any, source: str) -> PretrainedSAELookup:
    if not isinstance(value, dict) or "repo_id" not in value or "saes" not in value:
        raise ValueError(f"{source}: release {release!r} needs 'repo_id' and 'saes' fields")
    conversion = value.get("conversion_func") or "sae_lens"
    if conversion not in HF_CONVERTERS:
        raise ValueError(
            f"{source}: release {release!r} has conversion_func {conversion!r}; expected one of "
            f"{sorted(HF_CONVERTERS)}"
        )
    saes = value["saes"]
    if not isinstance(saes, list) or not all(isinstance(s, dict) and "id" in s and "path" in s for s in saes):
        raise ValueError(f"{source}: release {release!r}: 'saes' must be a list of {{id, path}} entries")
    return PretrainedSAELookup(
        release=release,
        repo_id=value["repo_id"],
        model=value.get("model", ""),
        conversion_func=conversion,
        saes_map={s["id"]: str(s["path"]) for s in saes},
        expected_var_explained={s["id"]: s.get("variance_explained", 1.0) for s in saes},
        expected_l0={s["id"]: s.get("l0", 0.0) for s in saes},
        neuronpedia_id={s["id"]: s.get("neuronpedia") for s in saes},
        norm_scaling_factor={},
        config_overrides=value.get("config_overrides"),
    )


def get_routed_saes_directory(registry: str | Path | None = None) -> dict[str, PretrainedSAELookup]:
    """Releases of routed SAEs (SAELens's `PretrainedSAELookup` records) from the plugin's YAML, or the
    `registry` file (the same keyword as `load_route_sae`)."""
    source = Path(registry) if registry is not None else files("sae_lens_routing").joinpath(RELEASES_FILENAME)
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of release name -> release")
    return {release: _lookup(release, value, str(source)) for release, value in data.items()}


def _converter(loader: Callable[..., Any], extra: dict[str, Any], revision: str | None) -> Callable[..., Any]:
    """A Hub converter with the revision bound and a release's config_overrides merged under the caller's
    (device/dtype win)."""

    @functools.wraps(loader)
    def converter(repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
                  cfg_overrides: dict[str, Any] | None = None) -> Any:  # fmt: skip
        overrides = {**extra, **(cfg_overrides or {})}
        return loader(repo_id, folder_name, device, force_download, overrides, revision=revision)

    return converter


def load_route_sae_with_cfg_and_sparsity(
    release_or_path: str | Path,
    sae_id: str | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    force_download: bool = False,
    conversion_func: str = "sae_lens",
    registry: str | Path | None = None,
    revision: str | None = None,
) -> tuple[SAE[Any], dict[str, Any], torch.Tensor | None]:
    """(sae, cfg dict, log-sparsity or None), validated on load (`sae_lens_routing.loading.integrity`).

    `release_or_path` is, in this order: an existing local folder (SAELens format, or an official `.pt` with
    its `routesae_official.json` sidecar; `sae_id` then names a subfolder), a release of the routed-SAE registry
    (`registry` or the packaged YAML), or a Hub repo id "org/name" with `sae_id` the folder in it
    (`conversion_func` "sae_lens" or "routesae_official"); `revision` picks the Hub branch, tag or commit.
    """
    if not isinstance(release_or_path, (str, Path)) or not str(release_or_path):
        raise ValueError(
            f"release_or_path must be a folder, a release or an 'org/name' repo id, got {release_or_path!r}"
        )
    local = Path(release_or_path) / (sae_id or "")
    if local.is_dir():
        official = (local / OFFICIAL_SIDECAR_FILENAME).is_file()
        converter = official_disk_loader if official else route_sae_disk_loader
        sae = SAE.load_from_disk(local, device=device, dtype=dtype, converter=converter)
        sparsity_file = local / "sparsity.safetensors"
        sparsity = None
        if not official and sparsity_file.is_file():
            sparsity = read_safetensors(sparsity_file, device=device)["sparsity"]
        return sae, sae.cfg.to_dict(), sparsity
    release = str(release_or_path)
    directory = get_routed_saes_directory(registry)
    if release in directory:
        lookup = directory[release]
        if sae_id not in lookup.saes_map:
            raise ValueError(
                f"sae_id {sae_id!r} not found in release {release!r}; valid ids: {sorted(lookup.saes_map)}"
            )
        conversion_func, overrides = lookup.conversion_func or "sae_lens", dict(lookup.config_overrides or {})
        repo_id, folder = lookup.repo_id, lookup.saes_map[sae_id]
    else:
        if "/" not in release or release.count("/") != 1:
            raise ValueError(
                f"release_or_path {release!r} is not a local folder, not a release in the routed-SAE registry "
                f"({sorted(directory)}), and not a Hub repo id of the form 'org/name'"
            )
        if not sae_id:
            raise ValueError(
                f"sae_id is required for the Hub repo {release!r} (the folder that holds the SAE)"
            )
        if conversion_func not in HF_CONVERTERS:
            raise ValueError(
                f"conversion_func must be one of {sorted(HF_CONVERTERS)}, got {conversion_func!r}"
            )
        overrides, repo_id, folder = {}, release, sae_id
    loader = _converter(HF_CONVERTERS[conversion_func], overrides, revision)
    return SAE.from_pretrained_with_cfg_and_sparsity(
        repo_id, folder, device=device, dtype=dtype, force_download=force_download, converter=loader
    )


def load_route_sae(release_or_path: str | Path, sae_id: str | None = None, **kwargs: Any) -> SAE[Any]:
    """The SAE alone; arguments as `load_route_sae_with_cfg_and_sparsity`."""
    return load_route_sae_with_cfg_and_sparsity(release_or_path, sae_id, **kwargs)[0]
