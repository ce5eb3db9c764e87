"""Several RouteSAEs from one model forward per batch; each variant ends equal to its solo run."""

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from transformer_lens.hook_points import HookedRootModule

from sae_lens_routing.saes.config import RouteTrainingSAEConfig
from sae_lens_routing.saes.route_sae import RouteTrainingSAE
from sae_lens_routing.training.run_config import RunConfig, checked_run, decode_fields, resolve_run_config
from sae_lens_routing.training.runner import RouteSAETrainingRunner, train_together, training_summary
from sae_lens_routing.training.validation import path_problems, refuse, run_paths, validate_route_config

# Runner fields a variant may change: they act on the SAE and its optimiser only, not on the shared stream.
VARIANT_FIELDS = frozenset({
    "sae", "lr", "lr_scheduler_name", "lr_warm_up_steps", "lr_end", "lr_decay_steps", "n_restart_cycles",
    "adam_beta1", "adam_beta2", "dead_feature_window", "feature_sampling_window", "dead_feature_threshold",
    "autocast", "compile_sae", "sae_compilation_mode", "from_pretrained_path", "n_checkpoints",
    "checkpoint_path", "save_final_checkpoint", "output_path", "logger", "verbose",
})
_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")

Config = LanguageModelSAERunnerConfig[Any] | RunConfig


def variant_config(base: LanguageModelSAERunnerConfig[Any], overrides: Mapping[str, Any], name: str) -> Any:
    """`base` with a variant's overrides; its output and checkpoint folders default to a subfolder `name`."""
    sae_overrides = dict(overrides.get("sae") or {})
    refuse(
        f"sweep variant {name!r}: unknown {section}fields {unknown}; expected {cls.__name__} fields"
        for section, cls, given in (("", LanguageModelSAERunnerConfig, overrides),
                                    ("sae ", RouteTrainingSAEConfig, sae_overrides))
        for unknown in [sorted(set(given) - {f.name for f in dataclasses.fields(cls)})]
        if unknown
    )
    cfg = copy.deepcopy(base)
    if sae_overrides:
        cfg.sae = dataclasses.replace(cfg.sae, **sae_overrides)  # re-runs the SAE config's checks
    for key, value in overrides.items():
        if key != "sae":
            setattr(cfg, key, copy.deepcopy(value))
    if "lr" in overrides and "lr_end" not in overrides and base.lr_end == base.lr / 10:
        cfg.lr_end = cfg.lr / 10  # SAELens's default lr_end follows lr, as a solo config would get it
    for field in ("output_path", "checkpoint_path"):
        if field not in overrides and getattr(base, field) is not None:
            setattr(cfg, field, f"{getattr(base, field)}/{name}")
    return cfg


def check_shared_stream(configs: Sequence[LanguageModelSAERunnerConfig[Any]], names: Sequence[str]) -> None:
    """Every variant must see the same activations in the same order, and write folders of its own."""
    first = configs[0]
    shared = [f.name for f in dataclasses.fields(first) if f.name not in VARIANT_FIELDS]
    changes = [
        (name, field, a, b) for cfg, name in zip(configs[1:], names[1:])
        for field, a, b in [(f, getattr(first, f), getattr(cfg, f)) for f in shared]
        + [(f"sae.{f}", getattr(first.sae, f), getattr(cfg.sae, f)) for f in ("d_in", "hook_names")]
        if a != b
    ]
    paths = [p for c, n in zip(configs, names) for p in run_paths(c, f"variant {n!r} ") if p[2]]
    refuse([
        *(f"sweep variant {name!r} changes {field} ({a!r} -> {b!r}): the SAEs of a sweep share one stream of "
          f"activations, so only SAE-side fields may differ ({sorted(VARIANT_FIELDS)}); train it as a "
          "separate run" for name, field, a, b in changes),
        *path_problems(paths),
        any(c.logger.log_to_wandb for c in configs) and "logger.log_to_wandb is not supported in a sweep "
        "(one W&B run per process); set it to False, or train the variant you want logged on its own",
        any(c.resume_from_checkpoint is not None for c in configs)
        and "resume_from_checkpoint is not supported in a sweep: resume each variant on its own",
    ])


def _check_names(names: list[str], n_configs: int) -> list[str]:
    unsafe = [n for n in names if not _NAME.match(n) or n in (".", "..")]
    repeated = sorted({n for n in names if names.count(n) > 1})
    refuse([
        unsafe and "sweep variant names must be folder-safe (letters, digits, _ . = + -; not '.' or '..'), "
        f"got {unsafe}",
        repeated and f"sweep variant names must be unique, repeated: {repeated}",
        len(names) != n_configs and f"give one name per config: {len(names)} names for {n_configs} configs",
    ])
    return names


class _VariantRunner(RouteSAETrainingRunner):
    """A later variant's runner: it adopts the first runner's model and store."""

    def __init__(self, run: RunConfig, first: RouteSAETrainingRunner, overwrite: bool):
        self._first = first
        super().__init__(run, overwrite=overwrite)

    def _init_store(self, *args: Any) -> None:
        self.model, self.activations_store = self._first.model, self._first.activations_store


class RouteSAESweepRunner:
    """Variants (overrides of one `cfg`, or full configs as `cfg`) trained on a shared model forward."""

    def __init__(self, cfg: Config | Sequence[Config],
                 variants: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
                 names: Sequence[str] | None = None, override_dataset: HfDataset | None = None,
                 override_model: HookedRootModule | None = None, overwrite: bool = False):
        base = isinstance(cfg, LanguageModelSAERunnerConfig)
        refuse([base != bool(variants) and "give one base config with at least one variant (e.g. "
                 "[{'sae': {'k': 16}}]), or a list of configs as cfg without variants"])
        if base:
            items = list(variants.items()) if isinstance(variants, Mapping) else [  # type: ignore[union-attr]
                (str(v.get("name", f"variant_{i}")), v) for i, v in enumerate(variants or [])]
            names = [n for n, _ in items]
            cfg = [variant_config(cfg, {k: v for k, v in o.items() if k != "name"}, n) for n, o in items]
        runs = [checked_run(c) for c in cfg]  # type: ignore[union-attr]
        names = list(names) if names is not None else [f"variant_{i}" for i in range(len(runs))]
        self.names = _check_names(names, len(runs))
        self.configs = [r.runner for r in runs]
        check_shared_stream(self.configs, self.names)
        first = RouteSAETrainingRunner(runs[0], override_dataset, override_model, overwrite=overwrite)
        self.runners = [first] + [_VariantRunner(r, first, overwrite) for r in runs[1:]]

    def run(self) -> dict[str, RouteTrainingSAE]:
        train_together(self.runners)
        return {name: runner.sae for name, runner in zip(self.names, self.runners)}


def sweep_run_configs(data: Mapping[str, Any]) -> tuple[list[str], list[RunConfig]]:
    """(names, validated `RunConfig`s) of a YAML mapping whose `sweep:` lists variant overrides."""
    base = resolve_run_config({k: v for k, v in data.items() if k != "sweep"})
    sweep = data.get("sweep")
    refuse([(not isinstance(sweep, list) or not sweep or not all(isinstance(v, Mapping) for v in sweep))
             and "sweep: must be a non-empty list of variant mappings (- {name: k16, sae: {k: 16}})"])
    names = _check_names([str(v.get("name", f"variant_{i}")) for i, v in enumerate(sweep)], len(sweep))
    runs = []
    for name, variant in zip(names, sweep):
        overrides = decode_fields(LanguageModelSAERunnerConfig, variant, "config", skip=("name", "sae"))
        if "sae" in variant:
            overrides["sae"] = decode_fields(RouteTrainingSAEConfig, variant["sae"], "sae")
        cfg = variant_config(base.runner, overrides, name)
        validate_route_config(cfg)
        runs.append(dataclasses.replace(base, runner=cfg))
    return names, runs


def train_sweep_from_config(data: Mapping[str, Any], overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    names, runs = sweep_run_configs(data)
    runner = RouteSAESweepRunner(runs, names=names, overwrite=overwrite)
    runner.run()
    return runner, {name: training_summary(r) for name, r in zip(runner.names, runner.runners)}
