"""Routed SAE releases (SAELens's directory has no registration hook) and `load_route_sae` for any source."""

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from sae_lens import SAE
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

from sae_lens_routing.loading.loaders import read_checked_sae_folder, route_sae_huggingface_loader
from sae_lens_routing.loading.official import OFFICIAL_SIDECAR_FILENAME as SIDECAR
from sae_lens_routing.loading.official import official_disk_loader, official_huggingface_loader
from sae_lens_routing.saes.config import refuse

HF_CONVERTERS: dict[str, Callable[..., Any]] = {
    "sae_lens": route_sae_huggingface_loader,
    "routesae_official": official_huggingface_loader,
}


def _lookup(release: str, value: Any) -> PretrainedSAELookup | str:
    """The release's SAELens record, or what is wrong with its entry."""
    value = value if isinstance(value, dict) else {}
    conversion, saes = value.get("conversion_func") or "sae_lens", value.get("saes")
    if conversion not in HF_CONVERTERS:
        return f"has conversion_func {conversion!r}; expected one of {sorted(HF_CONVERTERS)}"
    ok = isinstance(saes, list) and all(isinstance(s, dict) and {"id", "path"} <= set(s) for s in saes)
    if "repo_id" not in value or not ok:
        return "needs 'repo_id' and 'saes', a list of {id, path} entries"
    return PretrainedSAELookup(
        release=release, repo_id=value["repo_id"], model=value.get("model", ""), conversion_func=conversion,
        saes_map={s["id"]: str(s["path"]) for s in saes},
        expected_var_explained={s["id"]: s.get("variance_explained", 1.0) for s in saes},
        expected_l0={s["id"]: s.get("l0", 0.0) for s in saes},
        neuronpedia_id={s["id"]: s.get("neuronpedia") for s in saes},
        norm_scaling_factor={}, config_overrides=value.get("config_overrides"),
    )  # fmt: skip


def get_routed_saes_directory(registry: str | Path | None = None) -> dict[str, PretrainedSAELookup]:
    """Releases of routed SAEs (SAELens's `PretrainedSAELookup`s) from the plugin's YAML or `registry`."""
    source = Path(registry or files("sae_lens_routing") / "pretrained_routed_saes.yaml")
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    not_mapping = {"(top level)": "must be a mapping of release name -> release"}
    entries = {r: _lookup(r, v) for r, v in data.items()} if isinstance(data, dict) else not_mapping
    refuse(f"{source}: release {r!r} {e}" for r, e in entries.items() if isinstance(e, str))
    return entries  # type: ignore[return-value]


def load_route_sae_with_cfg_and_sparsity(
    release_or_path: str | Path, sae_id: str | None = None, *, device: str = "cpu", dtype: str = "float32",
    force_download: bool = False, conversion_func: str = "sae_lens", registry: str | Path | None = None,
    revision: str | None = None,
) -> tuple[SAE[Any], dict[str, Any], torch.Tensor | None]:  # fmt: skip
    """(sae, cfg dict, log-sparsity or None) from a local folder, a routed release or a Hub repo."""
    local = Path(release_or_path) / (sae_id or "")
    if local.is_dir():
        if (local / SIDECAR).is_file():
            (cfg, state), sparsity = official_disk_loader(local, device, {"dtype": dtype}), None
        else:
            cfg, state, sparsity = read_checked_sae_folder(local, device, {"dtype": dtype})
        sae = SAE.load_from_disk(local, device, dtype, converter=lambda *_, **__: (cfg, state))
        return sae, sae.cfg.to_dict(), sparsity
    release, directory = str(release_or_path), get_routed_saes_directory(registry)
    lookup, problem = directory.get(release), None
    if lookup is not None and sae_id not in lookup.saes_map:
        problem = f"sae_id {sae_id!r} not found in release {release!r}; valid ids: {sorted(lookup.saes_map)}"
    elif lookup is None and release.count("/") != 1:
        problem = (
            f"release_or_path {release!r} is not a local folder, not a release in the routed-SAE registry "
            f"({sorted(directory)}), and not a Hub repo id of the form 'org/name'"
        )
    elif lookup is None and not sae_id:
        problem = f"sae_id is required for the Hub repo {release!r} (the folder that holds the SAE)"
    elif lookup is None and conversion_func not in HF_CONVERTERS:
        problem = f"conversion_func must be one of {sorted(HF_CONVERTERS)}, got {conversion_func!r}"
    refuse([problem])
    repo_id, folder, overrides = release, sae_id, {}
    if lookup is not None:
        conversion_func, overrides = lookup.conversion_func or "sae_lens", dict(lookup.config_overrides or {})
        repo_id, folder = lookup.repo_id, lookup.saes_map[sae_id]  # type: ignore[index]
    loader = HF_CONVERTERS[conversion_func]

    def converter(*args: Any, cfg_overrides: dict[str, Any] | None = None, **kw: Any) -> Any:
        return loader(*args, cfg_overrides={**overrides, **(cfg_overrides or {})}, revision=revision, **kw)

    return SAE.from_pretrained_with_cfg_and_sparsity(
        repo_id, folder, device=device, dtype=dtype, force_download=force_download, converter=converter
    )


def load_route_sae(release_or_path: str | Path, sae_id: str | None = None, **kwargs: Any) -> SAE[Any]:
    """The SAE alone; arguments as `load_route_sae_with_cfg_and_sparsity`."""
    return load_route_sae_with_cfg_and_sparsity(release_or_path, sae_id, **kwargs)[0]
