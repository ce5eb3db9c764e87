"""`RouteSAESweepRunner`: several RouteSAEs from one model forward per batch. The forward dominates a step, so
variants differing only on the SAE side share the model and store; each keeps its own runner and ends equal to
its solo run."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.training.prefetch import PrefetchingIterator
from transformer_lens.hook_points import HookedRootModule

from sae_lens_routing.saes.config import RouteTrainingSAEConfig
from sae_lens_routing.saes.route_sae import RouteTrainingSAE
from sae_lens_routing.training.checkpoints import (
    claim_output,
    interrupts_as_keyboard_interrupt,
    save_interrupted,
)
from sae_lens_routing.training.run_config import RunConfig, checked_run, decode_fields, resolve_run_config
from sae_lens_routing.training.runner import RouteSAETrainingRunner, training_summary
from sae_lens_routing.training.trainer import RouteSAETrainer, training_batches
from sae_lens_routing.training.validation import path_problems, run_paths, validate_route_config

VARIANT_FIELDS = frozenset({
    "sae", "lr", "lr_scheduler_name", "lr_warm_up_steps", "lr_end", "lr_decay_steps", "n_restart_cycles",
    "adam_beta1", "adam_beta2", "dead_feature_window", "feature_sampling_window", "dead_feature_threshold",
    "autocast", "compile_sae", "sae_compilation_mode", "from_pretrained_path", "n_checkpoints",
    "checkpoint_path", "save_final_checkpoint", "output_path", "logger", "verbose",
})
"""Runner fields a variant may change: they act on the SAE and its optimiser only, not on the shared
stream."""
SHARED_SAE_FIELDS = ("d_in", "hook_names")
_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")

Config = LanguageModelSAERunnerConfig[Any] | RunConfig


def variant_config(
    base: LanguageModelSAERunnerConfig[Any], overrides: Mapping[str, Any], name: str
) -> LanguageModelSAERunnerConfig[Any]:
    """`base` with a variant's overrides (runner fields, SAE fields under `sae`); its output and checkpoint
    folders go into a subfolder named after the variant unless it sets its own."""
    sae_overrides = dict(overrides.get("sae") or {})
    sections = (("", LanguageModelSAERunnerConfig, overrides),
                ("sae ", RouteTrainingSAEConfig, sae_overrides))
    for section, cls, given in sections:
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"sweep variant {name!r}: unknown {section}fields {unknown}; expected {cls.__name__} fields"
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
    problem = next(_stream_problems(configs, names), None)
    if problem is not None:
        raise ValueError(problem)


def _stream_problems(configs: Sequence[Any], names: Sequence[str]) -> Iterator[str]:
    first = configs[0]
    for cfg, name in zip(configs[1:], names[1:]):
        pairs = [(f.name, getattr(first, f.name), getattr(cfg, f.name))
                 for f in dataclasses.fields(LanguageModelSAERunnerConfig) if f.name not in VARIANT_FIELDS]
        pairs += [(f"sae.{f}", getattr(first.sae, f), getattr(cfg.sae, f)) for f in SHARED_SAE_FIELDS]
        yield from (
            f"sweep variant {name!r} changes {field} ({shared!r} -> {got!r}): the SAEs of a sweep share "
            "one stream "
            f"of activations, so only SAE-side fields may differ ({sorted(VARIANT_FIELDS)}); train it as a "
            "separate run" for field, shared, got in pairs if shared != got
        )
    yield from path_problems([p for c, n in zip(configs, names) for p in run_paths(c, f"variant {n!r} ")
                              if p[2]])
    if any(c.logger.log_to_wandb for c in configs):
        yield ("logger.log_to_wandb is not supported in a sweep (one W&B run per process); set it to False, "
               "or train the variant you want logged on its own")
    if any(c.resume_from_checkpoint is not None for c in configs):
        yield "resume_from_checkpoint is not supported in a sweep: resume each variant on its own"


class _VariantRunner(RouteSAETrainingRunner):
    """A later variant's runner: it adopts the first runner's model and store instead of building its own."""

    def __init__(self, run: RunConfig, first: RouteSAETrainingRunner, overwrite: bool):
        self._first = first
        super().__init__(run, overwrite=overwrite)

    def _init_store(self, *args: Any) -> None:
        self.model, self.activations_store = self._first.model, self._first.activations_store


class RouteSAESweepRunner:
    """Train several RouteSAE variants of one runner config on a shared model forward.

    `variants`: overrides (a list, each may carry a `name`, or a {name: overrides} mapping) of runner fields
    and, under `sae`, SAE fields; or pass a list of full configs as `cfg` (`names` optional)."""

    def __init__(
        self,
        cfg: Config | Sequence[Config],
        variants: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
        names: Sequence[str] | None = None,
        override_dataset: HfDataset | None = None,
        override_model: HookedRootModule | None = None,
        overwrite: bool = False,
    ):
        base = isinstance(cfg, LanguageModelSAERunnerConfig)
        if base != bool(variants):
            raise ValueError("give one base config with at least one variant (e.g. [{'sae': {'k': 16}}]), "
                             "or a list of configs as cfg without variants")
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
        # Each variant seeds and initialises its SAE exactly as its solo run would.
        first = RouteSAETrainingRunner(runs[0], override_dataset, override_model, overwrite=overwrite)
        self.runners = [first] + [_VariantRunner(r, first, overwrite) for r in runs[1:]]

    def run(self) -> dict[str, RouteTrainingSAE]:
        """Train all variants in lockstep, then evaluate each on the same held-out batches and save it."""
        first = self.runners[0]
        with ExitStack() as stack:
            for runner in self.runners:
                stack.enter_context(claim_output(runner.cfg, runner.overwrite, runner.dist.is_main, True))
                runner._set_sae_metadata()
            batches = training_batches(first.activations_store, first.cfg)
            if isinstance(batches, PrefetchingIterator):
                stack.callback(batches.close)
            for runner in self.runners:
                runner.trainer = runner.build_trainer(batches)
                runner._compile_sae_if_needed()
            trainers = [r.trainer for r in self.runners if r.trainer is not None]
            with interrupts_as_keyboard_interrupt():
                try:
                    fit_in_lockstep(trainers, batches)
                except KeyboardInterrupt:
                    raise save_interrupted(trainers) from None
            if isinstance(batches, PrefetchingIterator):
                batches.close()  # the final evaluation reads the store from this thread
            eval_batches = first.final_eval_batches()
            for runner in self.runners:
                runner.finish(eval_batches)
        return {name: runner.sae for name, runner in zip(self.names, self.runners)}


def fit_in_lockstep(trainers: Sequence[RouteSAETrainer], batches: Any) -> None:
    """`SAETrainer.fit` for trainers fed the same batches, through the trainer's public seams, as SAELens's
    `MultiSAETrainer` does (no activation scaler to fold and no W&B in a sweep)."""
    for trainer in trainers:
        trainer.sae.to(trainer.cfg.device)
    while trainers[0].n_training_samples < trainers[0].cfg.total_training_samples:
        for trainer in trainers:
            trainer.maybe_reset_sparsity()
        batch = next(batches)
        for trainer in trainers:
            trainer.step(batch)
            thresholds = trainer.checkpoint_thresholds
            if thresholds and trainer.n_training_samples > thresholds[0]:
                trainer.save_checkpoint(checkpoint_name=str(trainer.n_training_samples))
                trainer.checkpoint_thresholds.pop(0)
            trainer.n_training_steps += 1
    for trainer in trainers:
        trainer.set_final_sae_metadata()
        if trainer.cfg.save_final_checkpoint:
            trainer.save_checkpoint(checkpoint_name=f"final_{trainer.n_training_samples}")


def _check_names(names: list[str], n_configs: int) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = [
        [n for n in names if not _NAME.match(n) or n in (".", "..")]
        and "sweep variant names must be folder-safe (letters, digits, _ . = + -; not '.' or '..'), got "
        f"{[n for n in names if not _NAME.match(n) or n in ('.', '..')]}",
        repeated and f"sweep variant names must be unique, repeated: {repeated}",
        len(names) != n_configs and f"give one name per config: {len(names)} names for {n_configs} configs",
    ]
    if any(problems):
        raise ValueError(next(p for p in problems if p))
    return names


def sweep_run_configs(data: Mapping[str, Any]) -> tuple[list[str], list[RunConfig]]:
    """(names, validated `RunConfig`s) of a YAML mapping with a `sweep:` list of variant overrides (each with
    an optional `name:`), decoded like the base and applied by `variant_config`. Loads nothing."""
    base = resolve_run_config({k: v for k, v in data.items() if k != "sweep"})
    sweep = data.get("sweep")
    if not isinstance(sweep, list) or not sweep or not all(isinstance(v, Mapping) for v in sweep):
        raise ValueError("sweep: must be a non-empty list of variant mappings (- {name: k16, sae: {k: 16}})")
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


def train_sweep_from_config(
    data: Mapping[str, Any], overwrite: bool = False
) -> tuple[RouteSAESweepRunner, dict[str, dict[str, Any]]]:
    """Train a YAML sweep (see `sweep_run_configs`); returns (sweep runner, {name: training summary})."""
    names, runs = sweep_run_configs(data)
    runner = RouteSAESweepRunner(runs, names=names, overwrite=overwrite)
    runner.run()
    return runner, {name: training_summary(r) for name, r in zip(runner.names, runner.runners)}
