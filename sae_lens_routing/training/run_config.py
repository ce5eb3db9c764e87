"""One typed, resolved, validated run config from YAML (runner fields, `sae:`, `model_path`, `corpus`)."""

import copy
import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from sae_lens import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import loading_from_pretrained
from transformers import AutoConfig
from typeguard import CollectionCheckStrategy, TypeCheckError, check_type

from sae_lens_routing.offline import corpus as offline_corpus
from sae_lens_routing.offline import local_model
from sae_lens_routing.saes.config import ARCHITECTURE, RouteTrainingSAEConfig, paper_hook_names
from sae_lens_routing.training.validation import refuse, validate_route_config

PAPER = "paper"
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A validated run: SAELens's runner config plus the offline model and corpus the YAML names."""

    runner: LanguageModelSAERunnerConfig[RouteTrainingSAEConfig]
    model_path: str | None = None
    corpus: str | None = None


def checked_run(cfg: LanguageModelSAERunnerConfig[Any] | RunConfig) -> RunConfig:
    """A `RunConfig` was validated when parsed; a config built in Python is validated here."""
    if isinstance(cfg, RunConfig):
        return cfg
    validate_route_config(cfg)
    return RunConfig(runner=cfg)


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    refuse([not Path(path).is_file() and f"config file not found: {path}"], FileNotFoundError)
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {_yaml_problem(e)}") from e
    return apply_overrides(decode_value(data, dict, str(path)), overrides)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`key=value` / `sae.k=32` overrides; values are parsed as YAML (numbers, booleans, lists, null)."""
    data = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            value = e
        refuse([
            (not sep or not key) and f"--set expects key=value, got {item!r}",
            # YAML reads an empty value as null: say so instead of unsetting the field
            not raw.strip() and f"--set {item!r} has no value; write {key}=null to clear a field",
            isinstance(value, yaml.YAMLError)
            and f"--set {item!r}: the value is not valid YAML: {_yaml_problem(value)}",
        ])
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = decode_value(node.setdefault(part, {}), dict, f"--set {key}: {part!r}")
        node[leaf] = value
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None) or str(error)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def decode_fields(cls: type, data: Any, section: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`cls`'s constructor arguments from a YAML mapping: unknown keys and wrong types are refused."""
    data = decode_value(data, dict, section)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls) if f.init} - set(skip))
    refuse([unknown and f"unknown {section} fields {unknown}; expected {cls.__name__} fields"])
    hints, prefix = typing.get_type_hints(cls), "" if section == "config" else f"{section}."
    return {k: decode_value(v, hints[k], f"{prefix}{k}") for k, v in data.items() if k not in skip}


def decode_value(value: Any, hint: Any, name: str) -> Any:
    """`value` checked as `hint` after mapping YAML's forms (list, `1e-3` text, mapping); a bool is no int."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = [typing.get_origin(a) or a for a in arms]
    if float in plain and (type(value) is int or isinstance(value, str) and _FLOAT_TEXT.match(value.strip())):
        value = float(value)
    elif tuple in plain and isinstance(value, list):
        value = tuple(value)
    dataclass_arm = next((a for a in arms if dataclasses.is_dataclass(a)), None)
    if dataclass_arm is not None and isinstance(value, Mapping):
        return dataclass_arm(**decode_fields(dataclass_arm, value, name))
    ok = not (isinstance(value, bool) and hint is not Any and bool not in plain)
    try:
        check_type(value, hint, collection_check_strategy=CollectionCheckStrategy.ALL_ITEMS)
    except TypeCheckError:
        ok = False
    if not ok:
        raise TypeError(f"{name} must be {_describe(hint)}, got {value!r} ({type(value).__name__})")
    return value


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(repr, args))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is dict:
        return "a mapping"
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of {_describe(args[0])}"
    return "null" if hint is type(None) else str(hint) if args else getattr(hint, "__name__", str(hint))


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    return parse_run_config(read_config(path, overrides))


def parse_run_config(data: Mapping[str, Any]) -> RunConfig:
    """The typed, resolved and validated run of a YAML mapping; loads no model weights and no corpus."""
    run = resolve_run_config(data)
    validate_route_config(run.runner)
    return run


def resolve_run_config(data: Mapping[str, Any]) -> RunConfig:
    """`parse_run_config` before validation (a sweep validates each variant instead of its base)."""
    data = decode_value(data, dict, "the config")
    model_path = decode_value(data.get("model_path"), str | None, "model_path")
    corpus = decode_value(data.get("corpus"), str | None, "corpus")
    fields = decode_fields(LanguageModelSAERunnerConfig, data, "config", skip=("sae", "model_path", "corpus"))
    raw = decode_value(data.get("sae"), dict, "sae")
    sae = decode_fields(RouteTrainingSAEConfig, raw, "sae", skip=("architecture", "hook_names"))
    if "hook_names" in raw:
        sae["hook_names"] = decode_value(raw["hook_names"], list[str] | Literal["paper"], "sae.hook_names")
    cached = fields.get("use_cached_activations")
    refuse([
        corpus not in (None, *offline_corpus.CORPORA)
        and f"corpus must be one of {offline_corpus.CORPORA}, got {corpus!r}",
        raw.get("architecture", ARCHITECTURE) != ARCHITECTURE
        and f"sae.architecture must be {ARCHITECTURE!r} (or left out), got {raw.get('architecture')!r}",
        cached and not fields.get("cached_activations_path")
        and "use_cached_activations: true needs cached_activations_path (the cache-activations --out)",
        not cached and "hook_names" not in sae
        and f"sae.hook_names is missing: list the routed hook points (layer order) or write {PAPER!r}",
        model_path is not None and fields.get("model_from_pretrained_kwargs")  # local models load unprocessed
        and "model_from_pretrained_kwargs apply to model_name loads only; a model_path model is always "
        f"loaded unprocessed, got {fields.get('model_from_pretrained_kwargs')!r}",
    ])
    if local_model.is_bridge_class(fields.get("model_class_name")):
        local_model.require_bridge(fields["model_class_name"])
    if cached:  # a cached run loads no model: model name, hooks and d_in come from the cache's metadata
        from sae_lens_routing.training.activation_cache import read_cache_metadata

        meta = read_cache_metadata(fields["cached_activations_path"])
        fields.setdefault("model_name", Path(model_path).stem if model_path else meta.model_name)
        if sae.get("hook_names") in (None, PAPER):
            sae["hook_names"] = list(meta.hook_names)
        sae.setdefault("d_in", meta.d_in)
        model_path = model_path or meta.model_path
    else:
        if model_path is not None:
            local_model.resolve_model_path(model_path)  # a missing file or folder fails here, before loading
            fields.setdefault("model_name", Path(model_path).stem)
        if sae["hook_names"] == PAPER or "d_in" not in sae:
            n_layers, d_model = _model_shape(fields, model_path)
            if sae["hook_names"] == PAPER:
                sae["hook_names"] = paper_hook_names(n_layers)
            sae.setdefault("d_in", d_model)
    if model_path is not None:
        sae["metadata"] = SAEMetadata(model_path=model_path)
        fields["model_from_pretrained_kwargs"] = {}  # SAELens's default would warn at every later load
    runner = LanguageModelSAERunnerConfig(sae=RouteTrainingSAEConfig(**sae), **fields)
    return RunConfig(runner=runner, model_path=model_path, corpus=corpus)


def _model_shape(fields: dict[str, Any], model_path: str | None) -> tuple[int, int]:
    """(n_layers, d_model) from the model's config alone (a GGUF is first dequantised into its folder)."""
    if model_path is not None:
        path = local_model.resolve_model_path(model_path)
        folder = local_model.gguf_to_hf_folder(path) if path.is_file() else path
        hf = json.loads((folder / "config.json").read_text())
        return int(hf["num_hidden_layers"]), int(hf["hidden_size"])
    is_bridge = local_model.is_bridge_class(fields.get("model_class_name"))
    refuse([
        (not (is_bridge or fields.get("model_class_name") in (None, "HookedTransformer"))
         or "model_name" not in fields)
        and f"sae.hook_names: {PAPER} and an omitted sae.d_in are read from the model's config: give "
        "model_path, or model_name of a HookedTransformer, or list sae.hook_names and give sae.d_in"
    ])
    try:  # offline, or a gated repo: the Hub's multi-line message becomes one line naming the fix
        if is_bridge:
            text_cfg = AutoConfig.from_pretrained(fields["model_name"]).get_text_config()
            return int(text_cfg.num_hidden_layers), int(text_cfg.hidden_size)
        cfg = loading_from_pretrained.get_pretrained_model_config(fields["model_name"])
        return int(cfg.n_layers), int(cfg.d_model)
    except OSError as e:
        raise ValueError(
            f"model_name {fields['model_name']!r}: its config could not be read from the Hugging Face Hub "
            f"({type(e).__name__}); offline, use model_path (e.g. model_path: smollm2), or give sae.d_in and "
            "list sae.hook_names"
        ) from e


def load_model_and_dataset(run: RunConfig) -> tuple[Any, Any | None]:
    """The one place a run's model and offline corpus load (dataset None: the store reads `dataset_path`)."""
    from sae_lens_routing.training.trainer import init_distributed, rank_device

    cfg = run.runner
    device = rank_device(str(cfg.llm_device), init_distributed(str(cfg.device)))
    if local_model.is_bridge_class(cfg.model_class_name):
        model = local_model.load_bridge(cfg.model_name, run.model_path, device=device)
    elif run.model_path is not None:
        model = local_model.load_local_model(run.model_path, device=device)
    else:
        from sae_lens.load_model import load_model

        model = load_model(cfg.model_class_name, cfg.model_name, device=device,
                           model_from_pretrained_kwargs=cfg.model_from_pretrained_kwargs,
                           hook_names=list(cfg.sae.hook_names))
    return model, run.corpus and offline_corpus.tokenized_corpus(model, run.corpus, cfg)


def train_from_config(run: RunConfig, overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train a parsed run (the `train` and `demo` commands); returns (runner, summary)."""
    from sae_lens_routing.training.runner import RouteSAETrainingRunner, training_summary

    runner = RouteSAETrainingRunner(run, overwrite=overwrite)
    runner.run()
    return runner, training_summary(runner)
