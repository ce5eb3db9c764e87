"""`RouteSAESweepRunner`: several RouteSAEs trained from one model forward per batch.

A RouteSAE run spends most of its time in the model forward (316 ms of a 400 ms step at the paper's shape on an
H100), so SAEs that differ only in the SAE side (k, d_sae, lr, routing, aux loss...) can share it: one store
feeds every batch to every SAE, as EleutherAI's sparsify trains many SAEs on one activation stream and as
SAELens's `MultiSAETrainer` does. SAELens's coordinator gives all its SAEs one trainer config (one lr, one
schedule) and its own checkpoint layout; here each variant keeps its own `RouteSAETrainingRunner` (config,
SAE, `RouteSAETrainer`, optimizer, scheduler, dead-latent window, checkpoints, output folder, final metrics),
and only the model and the store are shared. Each SAE ends equal to its solo run on the same seed and tokens.

    sweep = RouteSAESweepRunner(cfg, variants=[{"sae": {"k": 16}}, {"sae": {"k": 32}, "lr": 1e-3}])
    saes = sweep.run()  # {"variant_0": ..., "variant_1": ...}, saved under cfg.output_path/<name>

Variants may only change the SAE side; a field that changes the activations or their order (model, hooks,
dataset, context, batching, seed, training tokens...) is refused, naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from transformer_lens.hook_points import HookedRootModule

from sae_lens_routing.saes.config import RouteTrainingSAEConfig
from sae_lens_routing.saes.route_sae import RouteTrainingSAE
from sae_lens_routing.training.checkpoints import interrupts_as_keyboard_interrupt, save_interrupted
from sae_lens_routing.training.overlap import close_batches, training_batches
from sae_lens_routing.training.runner import RouteSAETrainingRunner
from sae_lens_routing.training.trainer import RouteSAETrainer
from sae_lens_routing.training.validation import check_disjoint_paths, run_paths, validate_route_config

VARIANT_FIELDS = frozenset(
    {
        "sae",
        "lr",
        "lr_scheduler_name",
        "lr_warm_up_steps",
        "lr_end",
        "lr_decay_steps",
        "n_restart_cycles",
        "adam_beta1",
        "adam_beta2",
        "dead_feature_window",
        "feature_sampling_window",
        "dead_feature_threshold",
        "autocast",
        "compile_sae",
        "sae_compilation_mode",
        "from_pretrained_path",
        "n_checkpoints",
        "checkpoint_path",
        "save_final_checkpoint",
        "output_path",
        "logger",
        "verbose",
    }
)
"""Runner fields a variant may change: they act on the SAE and its optimiser only. Any other field sets the
activations, their order or the number of steps, which the variants share."""
SHARED_SAE_FIELDS = ("d_in", "hook_names")
_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def variant_config(
    base: LanguageModelSAERunnerConfig[Any], overrides: Mapping[str, Any], name: str
) -> LanguageModelSAERunnerConfig[Any]:
    """`base` with a variant's overrides (runner fields, and SAE fields under `sae`); its output and checkpoint
    folders go under the base's, in a subfolder named after the variant, unless the variant sets its own."""
    known = {f.name for f in dataclasses.fields(LanguageModelSAERunnerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"sweep variant {name!r}: unknown fields {unknown}; expected LanguageModelSAERunnerConfig fields"
        )
    cfg = copy.deepcopy(base)
    sae_overrides = dict(overrides.get("sae") or {})
    if sae_overrides:
        sae_known = {f.name for f in dataclasses.fields(RouteTrainingSAEConfig)}
        bad = sorted(set(sae_overrides) - sae_known)
        if bad:
            raise ValueError(
                f"sweep variant {name!r}: unknown sae fields {bad}; expected RouteTrainingSAEConfig fields"
            )
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
    """Every variant must see the same activations in the same order; raise naming the first field that differs."""
    first = configs[0]
    for cfg, name in zip(configs[1:], names[1:]):
        for f in dataclasses.fields(LanguageModelSAERunnerConfig):
            if f.name not in VARIANT_FIELDS and getattr(cfg, f.name) != getattr(first, f.name):
                raise _shared_field_error(name, f.name, getattr(first, f.name), getattr(cfg, f.name))
        for field in SHARED_SAE_FIELDS:
            if getattr(cfg.sae, field) != getattr(first.sae, field):
                raise _shared_field_error(
                    name, f"sae.{field}", getattr(first.sae, field), getattr(cfg.sae, field)
                )
    written = [
        (f, p, w) for c, n in zip(configs, names) for f, p, w in run_paths(c, prefix=f"variant {n!r} ") if w
    ]
    check_disjoint_paths(written)  # resolved: `root/./a` is `root/a`
    if any(c.logger.log_to_wandb for c in configs):
        raise ValueError(
            "logger.log_to_wandb is not supported in a sweep (one W&B run per process); set it to False, or train "
            "the variant you want logged on its own"
        )
    if any(c.resume_from_checkpoint is not None for c in configs):
        raise ValueError("resume_from_checkpoint is not supported in a sweep: resume each variant on its own")


def _shared_field_error(name: str, field: str, shared: Any, got: Any) -> ValueError:
    return ValueError(
        f"sweep variant {name!r} changes {field} ({shared!r} -> {got!r}): the SAEs of a sweep share one stream of "
        f"activations, so only SAE-side fields may differ ({sorted(VARIANT_FIELDS)}); train it as a separate run"
    )


class _SharedStreamRunner(RouteSAETrainingRunner):
    """A variant's runner that adopts the first runner's model and store instead of building its own."""

    def __init__(self, cfg: LanguageModelSAERunnerConfig[Any], shared: RouteSAETrainingRunner, overwrite: bool):
        self._shared = shared
        super().__init__(cfg, overwrite=overwrite)

    def _init_live(self, override_dataset: HfDataset | None, override_model: HookedRootModule | None) -> None:
        self.model = self._shared.model
        self.activations_store = self._shared.activations_store

    _init_from_cache = _init_live


class RouteSAESweepRunner:
    """Train several RouteSAE variants of one runner config on a shared model forward.

    `variants`: a list of overrides (each may carry a `name`) or a {name: overrides} mapping; each overrides
    runner fields and, under `sae`, SAE fields. Alternatively pass a list of full configs as `cfg` (with
    `variants=None`, `names` optional)."""

    def __init__(
        self,
        cfg: LanguageModelSAERunnerConfig[Any] | Sequence[LanguageModelSAERunnerConfig[Any]],
        variants: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
        names: Sequence[str] | None = None,
        override_dataset: HfDataset | None = None,
        override_model: HookedRootModule | None = None,
        overwrite: bool = False,
    ):
        self.configs, self.names = _resolve_variants(cfg, variants, names)
        for config in self.configs:
            validate_route_config(config)
        check_shared_stream(self.configs, self.names)
        first = RouteSAETrainingRunner(self.configs[0], override_dataset, override_model, overwrite=overwrite)
        # Each variant seeds and initialises its SAE exactly as its solo run would.
        self.runners = [first] + [_SharedStreamRunner(c, first, overwrite) for c in self.configs[1:]]

    def run(self) -> dict[str, RouteTrainingSAE]:
        """Train all variants in lockstep, then evaluate each on the same held-out batches and save it.

        Weights equal each variant's solo run; final metrics equal a sequential solo run's (with
        `prefetch_llm_batches` the producer has read ahead, so the held-out batches come later in the stream)."""
        first = self.runners[0]
        for runner in self.runners:
            runner._set_sae_metadata()
        batches = training_batches(first.activations_store, first.cfg)
        try:
            for runner in self.runners:
                runner.trainer = runner.build_trainer(batches)
                runner._compile_sae_if_needed()
            trainers = [r.trainer for r in self.runners if r.trainer is not None]
            with interrupts_as_keyboard_interrupt():
                try:
                    fit_in_lockstep(trainers, batches)
                except KeyboardInterrupt:
                    raise save_interrupted(trainers) from None
            close_batches(batches)  # the final evaluation reads the store from this thread
            eval_batches = first.final_eval_batches()
            for runner in self.runners:
                assert runner.trainer is not None
                runner.final_metrics = runner.evaluate_final(eval_batches)
                if runner.cfg.output_path is not None and runner.dist.is_main:
                    runner.save_final_sae(
                        runner.sae,
                        runner.cfg.output_path,
                        log_feature_sparsity=runner.trainer.log_feature_sparsity,
                    )
        finally:
            close_batches(batches)
        return {name: runner.sae for name, runner in zip(self.names, self.runners)}


def fit_in_lockstep(trainers: Sequence[RouteSAETrainer], batches: Any) -> None:
    """`SAETrainer.fit` for several trainers fed the same batches, through the trainer's public seams
    (`maybe_reset_sparsity`, `step`, `checkpoint_thresholds`/`save_checkpoint`, `set_final_sae_metadata`), as
    SAELens's `MultiSAETrainer` drives its trainers. RouteSAE has no activation scaler to estimate or fold
    (`normalize_activations` must be "none") and a sweep logs nothing to W&B, so those parts of `fit` are absent."""
    for trainer in trainers:
        trainer.sae.to(trainer.cfg.device)
    total = trainers[0].cfg.total_training_samples
    while trainers[0].n_training_samples < total:
        for trainer in trainers:
            trainer.maybe_reset_sparsity()
        batch = next(batches)
        for trainer in trainers:
            trainer.step(batch)
            if (
                trainer.checkpoint_thresholds
                and trainer.n_training_samples > trainer.checkpoint_thresholds[0]
            ):
                trainer.save_checkpoint(checkpoint_name=str(trainer.n_training_samples))
                trainer.checkpoint_thresholds.pop(0)
            trainer.n_training_steps += 1
    for trainer in trainers:
        trainer.set_final_sae_metadata()
        if trainer.cfg.save_final_checkpoint:
            trainer.save_checkpoint(checkpoint_name=f"final_{trainer.n_training_samples}")


def _resolve_variants(
    cfg: LanguageModelSAERunnerConfig[Any] | Sequence[LanguageModelSAERunnerConfig[Any]],
    variants: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None,
    names: Sequence[str] | None,
) -> tuple[list[LanguageModelSAERunnerConfig[Any]], list[str]]:
    if isinstance(cfg, LanguageModelSAERunnerConfig):
        if not variants:
            raise ValueError("variants must list at least one variant (e.g. [{'sae': {'k': 16}}])")
        items = (
            list(variants.items())
            if isinstance(variants, Mapping)
            else [(str(v.get("name", f"variant_{i}")), v) for i, v in enumerate(variants)]
        )
        resolved = [(n, {k: v for k, v in o.items() if k != "name"}) for n, o in items]
        _check_names([n for n, _ in resolved])
        return [variant_config(cfg, o, n) for n, o in resolved], [n for n, _ in resolved]
    if variants is not None:
        raise ValueError("pass variants with one base config, or a list of configs as cfg, not both")
    configs = list(cfg)
    if not configs:
        raise ValueError("cfg must hold at least one LanguageModelSAERunnerConfig")
    resolved_names = list(names) if names is not None else [f"variant_{i}" for i in range(len(configs))]
    if len(resolved_names) != len(configs):
        raise ValueError(f"names has {len(resolved_names)} entries for {len(configs)} configs")
    _check_names(resolved_names)
    return configs, resolved_names


def _check_names(names: list[str]) -> None:
    bad = [n for n in names if not _NAME.match(n) or n in (".", "..")]
    if bad:
        raise ValueError(
            f"sweep variant names must be folder-safe (letters, digits, _ . = + -; not '.' or '..'), got {bad}"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"sweep variant names must be unique, repeated: {dupes}")


def sweep_run_configs(data: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """(names, `RunConfig`s) of a YAML mapping with a `sweep:` list: each variant's overrides (`sae:` fields
    merged into the base `sae:`, an optional `name:`) parsed, resolved and validated like a single run, with
    `output_path` / `checkpoint_path` extended by the variant's name. Loads nothing."""
    from sae_lens_routing.training.run_config import parse_run_config

    base = {k: v for k, v in data.items() if k != "sweep"}
    sweep = data.get("sweep")
    if not isinstance(sweep, list) or not sweep or not all(isinstance(v, Mapping) for v in sweep):
        raise ValueError("sweep: must be a non-empty list of variant mappings (e.g. - {name: k16, sae: {k: 16}})")
    names = [str(v.get("name", f"variant_{i}")) for i, v in enumerate(sweep)]
    _check_names(names)
    runs = []
    for name, variant in zip(names, sweep):
        overrides = {k: v for k, v in variant.items() if k != "name"}
        merged = {**base, **{k: v for k, v in overrides.items() if k != "sae"}}
        merged["sae"] = {**(base.get("sae") or {}), **(overrides.get("sae") or {})}
        for field in ("output_path", "checkpoint_path"):
            if field not in overrides and base.get(field) is not None:
                merged[field] = f"{base[field]}/{name}"
        runs.append(parse_run_config(merged))
    return names, runs


def train_sweep_from_config(
    data: Mapping[str, Any], overwrite: bool = False
) -> tuple[RouteSAESweepRunner, dict[str, dict[str, Any]]]:
    """Train a sweep from a YAML mapping with a `sweep:` list (see `sweep_run_configs`); every variant is
    checked before the model and corpus load, once. Returns (sweep runner, {name: training summary})."""
    from sae_lens_routing.training.checkpoints import refuse_existing_output
    from sae_lens_routing.training.run_config import load_model_and_dataset
    from sae_lens_routing.training.runner import training_summary

    names, runs = sweep_run_configs(data)
    check_shared_stream([r.runner for r in runs], names)
    for run in runs:  # before the model loads
        refuse_existing_output(run.runner.output_path, overwrite)
    first = runs[0]
    model, dataset = (None, None) if first.runner.use_cached_activations else load_model_and_dataset(first)
    runner = RouteSAESweepRunner(
        [r.runner for r in runs], names=names, override_dataset=dataset, override_model=model, overwrite=overwrite
    )
    runner.run()
    return runner, {name: training_summary(r) for name, r in zip(runner.names, runner.runners)}
