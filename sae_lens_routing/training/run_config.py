"""One typed run config from YAML, for the `train`, `cache-activations` and `demo` commands.

The YAML holds the runner config's own fields, an `sae:` section (a `RouteTrainingSAEConfig`), an optional
`logger:` section (`LoggingConfig`), and two keys of ours: `model_path:` (a local GGUF file or Hugging Face
folder, loaded offline instead of `model_name`) and `corpus:` (a named offline corpus instead of
`dataset_path`). `sae.hook_names: paper` means the paper's layers for the model; `sae.d_in` defaults to its
d_model.

The flow, once: `read_config` (the file, then each `--set`; errors name the file or the argument) ->
`parse_run_config`: every field decoded by its type (`config_decode`), `model_path` / `corpus` /
`hook_names: paper` / an omitted `d_in` resolved here alone (from the model's config file or the activation
cache's metadata, never its weights), SAELens's config built and `validate_route_config` run -> a `RunConfig`.
Only then does `load_model_and_dataset` load anything: a bad config fails in seconds, not after the model load.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sae_lens import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lens_routing.offline.bridge import is_bridge_class, require_bridge
from sae_lens_routing.offline.corpus import CORPORA
from sae_lens_routing.saes.config import ARCHITECTURE, RouteTrainingSAEConfig, paper_hook_names
from sae_lens_routing.training.config_decode import decode_fields, decode_value
from sae_lens_routing.training.validation import validate_route_config

EXTRA_KEYS = ("model_path", "corpus")
PAPER = "paper"


@dataclass(frozen=True)
class RunConfig:
    """A checked run: SAELens's runner config plus the offline model and corpus the YAML names."""

    runner: LanguageModelSAERunnerConfig[RouteTrainingSAEConfig]
    model_path: str | None = None
    """The local model as written (GGUF, Hugging Face folder or 'smollm2'); also in the SAE's metadata, so the
    analysis commands reload the same model."""
    corpus: str | None = None


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML file's mapping with the `--set key=value` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {_yaml_problem(e)}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
    return apply_overrides(data, overrides)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`key=value` / `sae.k=32` overrides; values are parsed as YAML (numbers, booleans, lists, null)."""
    data = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if not raw.strip():  # YAML reads an empty value as null: say so instead of unsetting the field
            raise ValueError(f"--set {item!r} has no value; write {key}=null to clear a field")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value is not valid YAML: {_yaml_problem(e)}") from e
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part!r} is not a section")
        node[leaf] = value
    return data


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    return parse_run_config(read_config(path, overrides))


def parse_run_config(data: Mapping[str, Any]) -> RunConfig:
    """The typed, resolved and validated run of a YAML mapping; loads no model weights and no corpus."""
    if not isinstance(data, Mapping):
        raise TypeError(f"the config must be a mapping of fields, got {type(data).__name__}")
    model_path = decode_value(data.get("model_path"), str | None, "model_path")
    corpus = decode_value(data.get("corpus"), str | None, "corpus")
    if corpus is not None and corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
    if "sae" not in data:
        raise ValueError(
            "the config needs an `sae:` section with the RouteTrainingSAEConfig fields "
            "(d_in, d_sae, k, hook_names)"
        )
    fields = decode_fields(LanguageModelSAERunnerConfig, data, "config", skip=("sae", *EXTRA_KEYS))
    if is_bridge_class(fields.get("model_class_name")):
        require_bridge(fields["model_class_name"])
    sae = _decode_sae(data["sae"])
    if fields.get("use_cached_activations"):
        model_path = _resolve_from_cache(fields, sae, model_path)
    else:
        _resolve_from_model(fields, sae, model_path)
    if model_path is not None:
        sae["metadata"] = SAEMetadata(model_path=model_path)
        _no_pretrained_kwargs(fields)
    runner = LanguageModelSAERunnerConfig(sae=RouteTrainingSAEConfig(**sae), **fields)
    validate_route_config(runner)
    return RunConfig(runner=runner, model_path=model_path, corpus=corpus)


def _decode_sae(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"sae must be a mapping of RouteTrainingSAEConfig fields (d_sae, k, hook_names...), got {raw!r}"
        )
    architecture = raw.get("architecture", ARCHITECTURE)
    if architecture != ARCHITECTURE:
        raise ValueError(f"sae.architecture must be {ARCHITECTURE!r} (or left out), got {architecture!r}")
    hooks = raw.get("hook_names")
    if isinstance(hooks, str) and hooks != PAPER:
        raise TypeError(f"sae.hook_names must be a list of hook names or {PAPER!r}, got {hooks!r} (str)")
    skip = ("architecture", "hook_names") if hooks == PAPER else ("architecture",)
    sae = decode_fields(RouteTrainingSAEConfig, raw, "sae", skip=skip)
    if hooks == PAPER:
        sae["hook_names"] = PAPER
    return sae


def _no_pretrained_kwargs(fields: dict[str, Any]) -> None:
    """`model_from_pretrained_kwargs` go to TransformerLens's `from_pretrained`, which a local model never goes
    through (`load_local_model` always loads it unprocessed). Recording SAELens's default for them would make
    every later load of the SAE warn about kwargs that were never applied."""
    if fields.get("model_from_pretrained_kwargs"):
        raise ValueError(
            "model_from_pretrained_kwargs apply to model_name loads only; a model_path model is always loaded "
            f"unprocessed, got {fields['model_from_pretrained_kwargs']!r}"
        )
    fields["model_from_pretrained_kwargs"] = {}


def _resolve_from_cache(fields: dict[str, Any], sae: dict[str, Any], model_path: str | None) -> str | None:
    """A `use_cached_activations` run loads no model: `model_name`, `sae.d_in` and `sae.hook_names` (omitted
    or `paper`) come from the cache's metadata (given ones are checked against it by the cached store), and
    the model path it recorded goes into the SAE for the analysis commands."""
    from sae_lens_routing.training.activation_cache import read_cache_metadata

    path = fields.get("cached_activations_path")
    if not path:
        raise ValueError(
            "use_cached_activations: true needs cached_activations_path (the cache-activations --out)"
        )
    meta = read_cache_metadata(path)
    fields.setdefault("model_name", Path(model_path).stem if model_path else meta.model_name)
    if sae.get("hook_names") in (None, PAPER):
        sae["hook_names"] = list(meta.hook_names)
    sae.setdefault("d_in", meta.d_in)
    return model_path or meta.model_path


def _resolve_from_model(fields: dict[str, Any], sae: dict[str, Any], model_path: str | None) -> None:
    """`hook_names: paper` and an omitted `d_in` from the model's config (n_layers, d_model), read before
    any weights; `model_name` defaults to the local model's name."""
    if model_path is not None:
        from sae_lens_routing.offline.local_model import resolve_model_path

        resolve_model_path(model_path)  # a missing file or folder fails here, before anything loads
        fields.setdefault("model_name", Path(model_path).stem)
    if "hook_names" not in sae:
        raise ValueError(
            f"sae.hook_names is missing: list the routed hook points (layer order) or write {PAPER!r}"
        )
    if sae["hook_names"] == PAPER or "d_in" not in sae:
        n_layers, d_model = _model_shape(fields, model_path)
        if sae["hook_names"] == PAPER:
            sae["hook_names"] = paper_hook_names(n_layers)
        sae.setdefault("d_in", d_model)


def _model_shape(fields: dict[str, Any], model_path: str | None) -> tuple[int, int]:
    """(n_layers, d_model) from the model's config alone. A GGUF is first dequantised into its cached
    Hugging Face folder (the loader's own first step, done once per file)."""
    if model_path is not None:
        from sae_lens_routing.offline.local_model import gguf_to_hf_folder, resolve_model_path

        path = resolve_model_path(model_path)
        folder = gguf_to_hf_folder(path) if path.is_file() else path
        hf = json.loads((folder / "config.json").read_text())
        return int(hf["num_hidden_layers"]), int(hf["hidden_size"])
    if is_bridge_class(fields.get("model_class_name")) and "model_name" in fields:
        from transformers import AutoConfig

        with _hub_config_errors(fields["model_name"]):
            hf = AutoConfig.from_pretrained(fields["model_name"]).get_text_config()
        return int(hf.num_hidden_layers), int(hf.hidden_size)
    if fields.get("model_class_name", "HookedTransformer") != "HookedTransformer" or "model_name" not in fields:
        raise ValueError(
            f"sae.hook_names: {PAPER} and an omitted sae.d_in are read from the model's config: give model_path, "
            "or model_name of a HookedTransformer, or list sae.hook_names and give sae.d_in"
        )
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    with _hub_config_errors(fields["model_name"]):
        cfg = get_pretrained_model_config(fields["model_name"])
    return int(cfg.n_layers), int(cfg.d_model)


@contextmanager
def _hub_config_errors(model_name: str) -> Iterator[None]:
    """Offline, or a gated repo: the Hub's multi-line message, as one line naming the fix."""
    try:
        yield
    except OSError as e:
        raise ValueError(
            f"model_name {model_name!r}: its config could not be read from the Hugging Face Hub "
            f"({type(e).__name__}); offline, use model_path (e.g. model_path: smollm2), or give sae.d_in and "
            "list sae.hook_names"
        ) from e


def load_model_and_dataset(run: RunConfig) -> tuple[Any, Any | None]:
    """The one place a run's model and offline corpus load (None: the runner reads `dataset_path`). Under
    torchrun each rank puts the model on its own GPU."""
    from sae_lens_routing.training.distributed import init_distributed, rank_device

    cfg = run.runner
    device = rank_device(str(cfg.llm_device), init_distributed(str(cfg.device)))
    if is_bridge_class(cfg.model_class_name):
        from sae_lens_routing.offline.bridge import load_bridge

        model = load_bridge(cfg.model_name, run.model_path, device=device)
    elif run.model_path is not None:
        from sae_lens_routing.offline.local_model import load_local_model

        model = load_local_model(run.model_path, device=device)
    else:
        from sae_lens.load_model import load_model

        model = load_model(
            cfg.model_class_name,
            cfg.model_name,
            device=device,
            model_from_pretrained_kwargs=cfg.model_from_pretrained_kwargs,
            hook_names=list(cfg.sae.hook_names),
        )
    dataset = None
    if run.corpus is not None:
        from sae_lens_routing.offline.corpus import load_corpus

        dataset = load_corpus(run.corpus, split="train")  # evaluation reads the held-out documents
    return model, dataset


def train_from_config(run: RunConfig, overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train a parsed run; returns (runner, summary). Used by the `train` and `demo` commands.

    With `use_cached_activations: true` neither the model nor the corpus is loaded: activations come from
    `cached_activations_path` (built by the `cache-activations` command from the same YAML)."""
    from sae_lens_routing.training.checkpoints import refuse_existing_output
    from sae_lens_routing.training.runner import RouteSAETrainingRunner, training_summary

    refuse_existing_output(run.runner.output_path, overwrite)  # before the model loads
    model, dataset = (None, None) if run.runner.use_cached_activations else load_model_and_dataset(run)
    runner = RouteSAETrainingRunner(
        run.runner, override_dataset=dataset, override_model=model, overwrite=overwrite
    )
    runner.run()
    return runner, training_summary(runner)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem
