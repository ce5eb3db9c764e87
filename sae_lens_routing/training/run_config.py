"""Build a `LanguageModelSAERunnerConfig` for a RouteSAE from YAML (what the `train` CLI reads).

The YAML holds the runner config's own fields, an `sae:` section (a `RouteTrainingSAEConfig`), an optional
`logger:` section (`LoggingConfig`), and two keys of ours: `model_path:` (a local GGUF file or Hugging Face
folder, loaded offline instead of `model_name`) and `corpus:` (a named offline corpus instead of
`dataset_path`). `sae.hook_names: paper` means the paper's layers for the loaded model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from sae_lens import LanguageModelSAERunnerConfig
from sae_lens.config import LoggingConfig

from sae_lens_routing.saes.config import RouteTrainingSAEConfig
from sae_lens_routing.saes.layers import paper_layers

EXTRA_KEYS = ("model_path", "corpus")


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key=value` / `sae.k=32` overrides; values are parsed as YAML (numbers, booleans, lists)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part!r} is not a section")
        node[leaf] = value
    return data


def split_config(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(runner fields incl. sae/logger dicts, our extra keys)."""
    extras = {k: data[k] for k in EXTRA_KEYS if k in data}
    fields = {k: v for k, v in data.items() if k not in EXTRA_KEYS}
    if "sae" not in fields or not isinstance(fields["sae"], dict):
        raise ValueError(
            "the config needs an `sae:` section with the RouteTrainingSAEConfig fields (d_in, d_sae, k, hook_names)"
        )
    known = {f.name for f in dataclasses.fields(LanguageModelSAERunnerConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(
            f"unknown config fields {unknown}; expected LanguageModelSAERunnerConfig fields or {list(EXTRA_KEYS)}"
        )
    sae_known = {f.name for f in dataclasses.fields(RouteTrainingSAEConfig)}
    sae_unknown = sorted(set(fields["sae"]) - sae_known - {"architecture"})
    if sae_unknown:
        raise ValueError(f"unknown sae fields {sae_unknown}; expected RouteTrainingSAEConfig fields")
    return fields, extras


def build_runner_config(
    fields: dict[str, Any], model: Any | None = None
) -> LanguageModelSAERunnerConfig[Any]:
    """The runner config; `model` resolves `hook_names: paper` and fills `d_in` from `d_model` if omitted."""
    sae_fields = {k: v for k, v in fields["sae"].items() if k != "architecture"}
    if sae_fields.get("hook_names") == "paper":
        if model is None:
            raise ValueError("sae.hook_names: paper needs the model (n_layers) to be loaded first")
        sae_fields["hook_names"] = paper_layers(model)
    if "d_in" not in sae_fields and model is not None:
        sae_fields["d_in"] = int(model.cfg.d_model)
    rest = {k: v for k, v in fields.items() if k != "sae"}
    if isinstance(rest.get("logger"), dict):
        rest["logger"] = LoggingConfig(**rest["logger"])
    if isinstance(rest.get("seqpos_slice"), list):
        rest["seqpos_slice"] = tuple(rest["seqpos_slice"])
    return LanguageModelSAERunnerConfig(sae=RouteTrainingSAEConfig(**sae_fields), **rest)


def load_model_and_dataset(fields: dict[str, Any], extras: dict[str, Any]) -> tuple[Any | None, Any | None]:
    """The model (when the YAML names a local one, or hooks/d_in need it) and the offline corpus, if any."""
    model = None
    if "model_path" in extras:
        from sae_lens_routing.offline.local_model import load_local_model

        model = load_local_model(
            str(extras["model_path"]),
            device=str(fields.get("llm_device") or fields.get("device", "cpu")),
            dtype=str(fields.get("model_dtype", "float32")),
        )
        fields.setdefault("model_name", Path(str(extras["model_path"])).stem)
    elif fields["sae"].get("hook_names") == "paper" or "d_in" not in fields["sae"]:
        from sae_lens.load_model import load_model

        probe = LanguageModelSAERunnerConfig.__dataclass_fields__
        model = load_model(
            fields.get("model_class_name", probe["model_class_name"].default),
            fields.get("model_name", probe["model_name"].default),
            device=str(fields.get("llm_device") or fields.get("device", "cpu")),
            model_from_pretrained_kwargs=fields.get("model_from_pretrained_kwargs"),
        )
    dataset = None
    if "corpus" in extras:
        from sae_lens_routing.offline.corpus import load_corpus

        dataset = load_corpus(str(extras["corpus"]))
    return model, dataset


def fill_from_cache(fields: dict[str, Any], extras: dict[str, Any]) -> None:
    """A `use_cached_activations` run loads no model: `model_name`, `sae.d_in` and `sae.hook_names`
    (omitted or `paper`) come from the cache's metadata; given ones are checked against it by the runner."""
    from sae_lens_routing.training.activation_cache import read_cache_metadata

    path = fields.get("cached_activations_path")
    if not path:
        raise ValueError("use_cached_activations: true needs cached_activations_path (the cache-activations --out)")
    meta = read_cache_metadata(str(path))
    if "model_path" in extras:
        fields.setdefault("model_name", Path(str(extras["model_path"])).stem)
    fields.setdefault("model_name", meta.model_name)
    if meta.model_path and "model_path" not in extras:  # recorded in the SAE, for the analysis commands
        extras["model_path"] = meta.model_path
    sae = fields["sae"]
    if sae.get("hook_names") in (None, "paper"):
        sae["hook_names"] = list(meta.hook_names)
    sae.setdefault("d_in", meta.d_in)


def train_from_config(data: dict[str, Any], overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train from a parsed YAML mapping; returns (runner, summary). Used by the `train` and `demo` commands.

    With `use_cached_activations: true` neither the model nor the corpus is loaded: activations come from
    `cached_activations_path` (built by the `cache-activations` command from the same YAML)."""
    from sae_lens_routing.training.runner import RouteSAETrainingRunner, training_summary

    fields, extras = split_config(data)
    fields["sae"] = dict(fields["sae"])
    if fields.get("use_cached_activations"):
        fill_from_cache(fields, extras)
        model, dataset = None, None
    else:
        model, dataset = load_model_and_dataset(fields, extras)
    cfg = build_runner_config(fields, model)
    runner = RouteSAETrainingRunner(cfg, override_dataset=dataset, override_model=model, overwrite=overwrite)
    if "model_path" in extras:  # so analysis commands can reload the same local model
        runner.sae.cfg.metadata.model_path = str(extras["model_path"])
    runner.run()
    return runner, training_summary(runner)
