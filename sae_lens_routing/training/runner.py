"""The one training path (YAML, Python configs, sweeps): SAELens's runner builds a single-hook store."""

import copy
import logging
import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import wandb
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME
from sae_lens.llm_sae_training_runner import LanguageModelSAETrainingRunner
from sae_lens.saes.sae import TrainingSAE, TrainingSAEConfig
from sae_lens.training._interruption import InterruptedException
from sae_lens.training.prefetch import PrefetchingIterator
from safetensors.torch import save_file
from transformer_lens.hook_points import HookedRootModule

from sae_lens_routing.atomic import atomic_directory, strict_json
from sae_lens_routing.saes.route_sae import RouteTrainingSAE
from sae_lens_routing.saes.routed_metrics import routing_shares
from sae_lens_routing.training import run_config
from sae_lens_routing.training.activation_cache import CachedMultiLayerActivationsStore
from sae_lens_routing.training.checkpoints import (
    check_resume_checkpoint,
    claim_output,
    interrupts_as_keyboard_interrupt,
    save_interrupted,
)
from sae_lens_routing.training.compiled_forward import supports_compiled_forward
from sae_lens_routing.training.end_to_end import finetune_end_to_end
from sae_lens_routing.training.store import MultiLayerActivationsStore
from sae_lens_routing.training.trainer import (
    DistInfo,
    RoutedTrainingEvaluator,
    RouteSAETrainer,
    eval_batches,
    init_distributed,
    rank_device,
    routed_reconstruction_metrics,
    training_batches,
)
from sae_lens_routing.training.validation import refuse, validate_route_run

logger = logging.getLogger(__name__)


class RouteSAETrainingRunner(LanguageModelSAETrainingRunner):
    """Train a RouteSAE from a runner config (same constructor overrides as the stock runner)."""

    activations_store: MultiLayerActivationsStore
    sae: RouteTrainingSAE
    trainer: RouteSAETrainer | None = None
    final_metrics: dict[str, Any] | None = None
    end_to_end_history: list[dict[str, float]] = []  # noqa: RUF012 (replaced per run, never mutated)

    def __init__(self, cfg: LanguageModelSAERunnerConfig[Any] | run_config.RunConfig,
                 override_dataset: HfDataset | None = None, override_model: HookedRootModule | None = None,
                 override_sae: TrainingSAE[Any] | None = None, overwrite: bool = False):
        """`overwrite` replaces an output folder this package wrote; others are refused before loading."""
        run = run_config.checked_run(cfg)
        self.overwrite = overwrite
        self.dist = init_distributed(str(run.runner.device))
        self.global_cfg = run.runner  # what the user asked for: recorded in runner_cfg.json and W&B
        self.cfg = per_rank_config(run.runner, self.dist)
        with claim_output(self.cfg, overwrite, self.dist.is_main):  # refused before anything loads
            pass
        if self.cfg.resume_from_checkpoint is not None:
            check_resume_checkpoint(self.cfg.resume_from_checkpoint, self.cfg)
        self._init_store(run, override_dataset, override_model)
        torch.manual_seed(self.cfg.seed)
        sae = override_sae
        if sae is None and self.cfg.from_pretrained_path is not None:
            sae = TrainingSAE.load_from_disk(self.cfg.from_pretrained_path, str(self.cfg.device))
        elif sae is None:
            sae_cfg = TrainingSAEConfig.from_dict(self.cfg.get_training_sae_cfg_dict())
            sae = TrainingSAE.from_dict(sae_cfg.to_dict())
        self.sae = sae.to(self.cfg.device)  # type: ignore[assignment]
        self.evaluator = RoutedTrainingEvaluator(self.activations_store, self.cfg.n_eval_batches)

    def _init_store(self, run: run_config.RunConfig, dataset: HfDataset | None, model: Any) -> None:
        cached = self.cfg.use_cached_activations
        refuse([cached and dataset is not None and "override_dataset cannot be combined with "
                "use_cached_activations=True: the tokens come from the cache at cached_activations_path"])
        if model is None and not cached:
            model, loaded = run_config.load_model_and_dataset(run)
            dataset = loaded if dataset is None else dataset
        validate_route_run(self.cfg, model)
        self.model = model
        if cached:
            self.activations_store = CachedMultiLayerActivationsStore.from_cache_config(
                self.cfg, model, rank=self.dist.rank, world_size=self.dist.world_size
            )
            return
        hooks = list(self.cfg.sae.hook_names)
        if self.cfg.compile_llm and not supports_compiled_forward(model, hooks, self.cfg.model_kwargs):
            super()._compile_llm_if_needed()  # the store compiles its own hook-free forward where it can
        if self.dist.enabled:
            from datasets import load_dataset
            from datasets.distributed import split_dataset_by_node

            if dataset is None:
                dataset = load_dataset(
                    self.cfg.dataset_path, split="train", streaming=self.cfg.streaming,
                    trust_remote_code=self.cfg.dataset_trust_remote_code,  # type: ignore[arg-type]
                )
            dataset = split_dataset_by_node(dataset, rank=self.dist.rank, world_size=self.dist.world_size)
        self.activations_store = MultiLayerActivationsStore.from_route_config(model, self.cfg, dataset)

    def _set_sae_metadata(self) -> None:
        super()._set_sae_metadata()
        # SAELens tools need one valid hook string; the last routed hook is where routing is decided.
        self.sae.cfg.metadata.hook_name = self.cfg.sae.hook_names[-1]
        self.sae.cfg.metadata.hook_names = list(self.cfg.sae.hook_names)

    def build_trainer(self, data_provider: Any) -> RouteSAETrainer:
        return RouteSAETrainer(sae=self.sae, data_provider=data_provider, evaluator=self.evaluator,
                               save_checkpoint_fn=self.save_checkpoint, cfg=self.cfg.to_sae_trainer_config())

    def run(self) -> RouteTrainingSAE:
        train_together([self])
        summary = format_summary(training_summary(self))
        logger.info(summary)
        if self.cfg.verbose and self.dist.is_main:
            print(summary, flush=True)
        return self.sae

    def finish(self, batches: list[torch.Tensor] | None = None) -> None:
        """After training: the end-to-end phase, the final metrics, the output folder."""
        assert self.trainer is not None
        tokens = self.cfg.sae.end_to_end_tokens_for(cached=self.cfg.use_cached_activations)
        n_batches = math.ceil(tokens / (self.cfg.store_batch_size_prompts * self.cfg.context_size))
        self.end_to_end_history = history = finetune_end_to_end(
            self.sae, self.model, (self.activations_store.get_batch_tokens() for _ in range(n_batches)),
            lr=self.cfg.sae.end_to_end_lr, mse_coefficient=self.cfg.sae.end_to_end_mse_coefficient,
            exclude_special_tokens=self.activations_store.exclude_special_tokens,
        ) if n_batches else []
        self.sae.eval()
        batches = batches or eval_batches(self.activations_store, self.cfg.n_eval_batches)
        self.final_metrics = routed_reconstruction_metrics(self.sae, batches) | {
            "sparsity/dead_features": int(self.trainer.dead_neurons.sum().item()),
            "training_tokens": int(self.trainer.n_training_samples * self.dist.world_size),
            "training_steps": int(self.trainer.n_training_steps)}
        if history:
            self.final_metrics |= {"end_to_end/steps": len(history),
                                   "end_to_end/kl_first_step": history[0]["kl"],
                                   "end_to_end/kl_last_step": history[-1]["kl"]}
        if self.cfg.output_path is not None and self.dist.is_main:
            self.save_final_sae(self.sae, self.cfg.output_path, self.trainer.log_feature_sparsity)

    def save_final_sae(self, sae: Any, output_path: str, log_feature_sparsity: Any = None) -> None:
        """The stock output folder plus metrics, atomically: an output that appeared meanwhile stays."""
        with atomic_directory(output_path, overwrite=self.overwrite) as tmp:
            weights_path, cfg_path = sae.save_inference_model(str(tmp))
            if log_feature_sparsity is not None:
                save_file({"sparsity": log_feature_sparsity}, tmp / SPARSITY_FILENAME)
            (tmp / RUNNER_CFG_FILENAME).write_text(strict_json(self.global_cfg.to_dict()))
            if self.final_metrics is not None:
                (tmp / "training_metrics.json").write_text(strict_json(self.final_metrics, indent=2))
        if self.cfg.logger.log_to_wandb:
            out = Path(output_path)
            self.cfg.logger.log(  # SAELens records `trainer.cfg` as the artifact's metadata: the global one
                SimpleNamespace(sae=sae, cfg=self.global_cfg), out / Path(weights_path).name,
                out / Path(cfg_path).name, wandb_aliases=["final_model"],
                sparsity_path=out / SPARSITY_FILENAME if log_feature_sparsity is not None else None,
            )

    def save_checkpoint(self, checkpoint_path: Path | None) -> None:
        if isinstance(self.activations_store, CachedMultiLayerActivationsStore) and self.trainer is not None:
            # The trainer's count, not the store's: a prefetch thread may have read batches not trained on.
            self.activations_store.read_position = self.trainer.n_training_samples
        if self.dist.is_main and checkpoint_path is not None:  # the store state and the global runner cfg
            self.activations_store.save_to_checkpoint(checkpoint_path)
            (Path(checkpoint_path) / RUNNER_CFG_FILENAME).write_text(strict_json(self.global_cfg.to_dict()))


def train_together(runners: Sequence[RouteSAETrainingRunner]) -> None:
    """Train runners on the first one's batches; an interrupt saves a full checkpoint, not just the store."""
    first, log = runners[0], runners[0].cfg.logger
    resume = first.cfg.resume_from_checkpoint  # a sweep refuses W&B and resuming: only a solo run gets here
    with ExitStack() as stack:
        for runner in runners:
            stack.enter_context(claim_output(runner.cfg, runner.overwrite, runner.dist.is_main, True))
            runner._set_sae_metadata()
        if log.log_to_wandb:  # every rank runs the same logging code (metrics all-reduced); rank 0 reports
            wandb.init(project=log.wandb_project, entity=log.wandb_entity, config=first.global_cfg.to_dict(),
                       name=log.run_name, id=log.wandb_id, mode=None if first.dist.is_main else "disabled")
        if resume is not None:  # the store first: an overlapped producer starts reading as soon as it exists
            first.activations_store.load_from_checkpoint(resume)
        batches = training_batches(first.activations_store, first.cfg)
        prefetching = isinstance(batches, PrefetchingIterator)
        if prefetching:
            stack.callback(batches.close)
        for runner in runners:
            runner.trainer = runner.build_trainer(batches)
            if resume is not None:
                runner.trainer.load_trainer_state(resume)
                runner.sae.load_weights_from_checkpoint(resume)
            runner._compile_sae_if_needed()
        trainers = [r.trainer for r in runners if r.trainer is not None]
        with interrupts_as_keyboard_interrupt():
            try:
                trainers[0].fit() if len(trainers) == 1 else fit_in_lockstep(trainers, batches)
            except (KeyboardInterrupt, InterruptedException):
                raise save_interrupted(trainers) from None
        if prefetching:
            batches.close()  # the final evaluation reads the store from this thread
        shared = eval_batches(first.activations_store, first.cfg.n_eval_batches) if runners[1:] else None
        for runner in runners:
            runner.finish(shared)
        if log.log_to_wandb:
            wandb.finish()


def fit_in_lockstep(trainers: Sequence[RouteSAETrainer], batches: Any) -> None:
    """`SAETrainer.fit` for trainers fed the same batches, as SAELens's `MultiSAETrainer` does it."""
    for trainer in trainers:
        trainer.sae.to(trainer.cfg.device)
    while trainers[0].n_training_samples < trainers[0].cfg.total_training_samples:
        for trainer in trainers:
            trainer.maybe_reset_sparsity()
        batch = next(batches)
        for trainer in trainers:
            trainer.step(batch)
            trainer._checkpoint_if_needed()
            trainer.n_training_steps += 1
    for trainer in trainers:
        trainer.set_final_sae_metadata()
        if trainer.cfg.save_final_checkpoint:
            trainer.save_checkpoint(checkpoint_name=f"final_{trainer.n_training_samples}")


def per_rank_config(cfg: LanguageModelSAERunnerConfig[Any], info: DistInfo) -> Any:
    """Under torchrun, `train_batch_size_tokens` and `training_tokens` stay global: each rank takes 1/N."""
    if not info.enabled:
        return cfg
    refuse(f"{n}={getattr(cfg, n)} must be divisible by the number of ranks ({info.world_size})"
           for n in ("train_batch_size_tokens", "training_tokens") if getattr(cfg, n) % info.world_size)
    local = copy.deepcopy(cfg)
    local.train_batch_size_tokens //= info.world_size
    local.training_tokens //= info.world_size
    for name in ("device", "llm_device", "act_store_device"):
        setattr(local, name, rank_device(str(getattr(cfg, name)), info))
    return local


def training_summary(runner: RouteSAETrainingRunner) -> dict[str, Any]:
    m = dict(runner.final_metrics or {})
    return {
        "output_path": runner.cfg.output_path,
        "normalized_mse": m.get("reconstruction_quality/normalized_mse"),
        "explained_variance": m.get("reconstruction_quality/explained_variance"), "l0": m.get("sparsity/l0"),
        "dead_latents": m.get("sparsity/dead_features"), "d_sae": runner.cfg.sae.d_sae,
        "training_tokens": m.get("training_tokens"), "routing_share": routing_shares(m),
        "routing_entropy_bits": m.get("routing/entropy_bits"),
        "eval_tokens": m.get("metrics/total_tokens_evaluated"),
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"RouteSAE saved to: {s['output_path'] or 'nowhere (output_path: null)'}",
        f"  measured on {s.get('eval_tokens') or 'the'} tokens of fresh batches after training; "
        "x = each token's routed input (its routed layer, standardised, times the router weight)",
        f"  NormMSE            {s['normalized_mse']:.4f}  mean over tokens of ||x_hat - x||^2 / ||x||^2 "
        "(the training loss)",
        f"  explained variance {s['explained_variance']:.4f}  1 - sum ||x_hat - x||^2 / sum ||x - mean(x)||^2"
        " (relative to the spread around the mean input, so below 1 - NormMSE when x has a large mean)",
        f"  L0                 {s['l0']:.1f}",
        f"  dead latents       {s['dead_latents']} / {s['d_sae']}",
        f"  training tokens    {s['training_tokens']}",
        f"  routing entropy    {s['routing_entropy_bits']:.2f} bits "
        f"(max {math.log2(max(len(s['routing_share']), 1)):.2f}: spread evenly; 0: one layer)",
        "  routing share per layer:",
    ]
    return "\n".join(lines + [f"    {hook:<28} {share:6.1%}" for hook, share in s["routing_share"].items()])
