"""`RouteSAETrainingRunner`: an ordinary SAELens config run, for routed SAEs.

Users write a `LanguageModelSAERunnerConfig` with `sae=RouteTrainingSAEConfig(...)` and call
`RouteSAETrainingRunner(cfg).run()`. Compared with the stock runner it builds a `MultiLayerActivationsStore`
(never the single-hook store), a routed evaluator, and a `RouteSAETrainer` (data-parallel under torchrun).

SAELens's runner hard-codes its store, evaluator and trainer inside `__init__`/`run`, with no factory to
override, so this subclass re-implements those two methods (same steps, same config fields) instead of
calling them.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import wandb
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME
from sae_lens.llm_sae_training_runner import LanguageModelSAETrainingRunner
from sae_lens.load_model import load_model
from sae_lens.saes.sae import TrainingSAE, TrainingSAEConfig
from sae_lens.training._interruption import InterruptedException
from sae_lens.training.prefetch import PrefetchingIterator
from safetensors.torch import save_file
from transformer_lens.hook_points import HookedRootModule

from sae_lens_routing.atomic import atomic_directory, strict_json
from sae_lens_routing.saes.route_sae import RouteTrainingSAE
from sae_lens_routing.saes.routed_metrics import routing_shares
from sae_lens_routing.training.activation_cache import CachedMultiLayerActivationsStore
from sae_lens_routing.training.checkpoints import (
    check_resume_checkpoint,
    claim_output,
    interrupts_as_keyboard_interrupt,
    refuse_existing_output,
    remove_stale_partial_writes,
    save_interrupted,
)
from sae_lens_routing.training.compiled_forward import supports_compiled_forward
from sae_lens_routing.training.distributed import DistInfo, init_distributed, rank_device, shard_dataset
from sae_lens_routing.training.end_to_end import finetune_end_to_end
from sae_lens_routing.training.overlap import training_batches
from sae_lens_routing.training.store import MultiLayerActivationsStore
from sae_lens_routing.training.trainer import RouteSAETrainer
from sae_lens_routing.training.training_evaluator import (
    RoutedTrainingEvaluator,
    routed_reconstruction_metrics,
)
from sae_lens_routing.training.validation import validate_route_config, validate_route_run

logger = logging.getLogger(__name__)


class RouteSAETrainingRunner(LanguageModelSAETrainingRunner):
    """Train a RouteSAE from a `LanguageModelSAERunnerConfig` (same constructor overrides as the stock runner)."""

    activations_store: MultiLayerActivationsStore
    sae: RouteTrainingSAE
    trainer: RouteSAETrainer | None = None
    final_metrics: dict[str, Any] | None = None
    end_to_end_history: list[dict[str, float]] = []  # noqa: RUF012 (replaced per run, never mutated)

    def __init__(
        self,
        cfg: LanguageModelSAERunnerConfig[Any],
        override_dataset: HfDataset | None = None,
        override_model: HookedRootModule | None = None,
        override_sae: TrainingSAE[Any] | None = None,
        overwrite: bool = False,
    ):
        """`overwrite`: replace an existing `output_path` (by default a run refuses it before training)."""
        # Deliberately not super().__init__(): it would build the single-hook ActivationsStore first.
        validate_route_config(cfg)  # everything that needs no model, before anything loads
        self.overwrite = overwrite
        refuse_existing_output(cfg.output_path, overwrite)
        if cfg.resume_from_checkpoint is not None:
            check_resume_checkpoint(cfg.resume_from_checkpoint, cfg)
        self.dist = init_distributed(str(cfg.device))
        # What the user asked for (global tokens and batch): what runner_cfg.json, the model card and W&B record.
        self.global_cfg = cfg
        self.cfg = per_rank_config(cfg, self.dist)
        if self.cfg.use_cached_activations:
            self._init_from_cache(override_dataset, override_model)
        else:
            self._init_live(override_dataset, override_model)

        torch.manual_seed(self.cfg.seed)
        if override_sae is not None:
            sae = override_sae
        elif self.cfg.from_pretrained_path is not None:
            sae = TrainingSAE.load_from_disk(self.cfg.from_pretrained_path, str(self.cfg.device))
        else:
            sae = TrainingSAE.from_dict(
                TrainingSAEConfig.from_dict(self.cfg.get_training_sae_cfg_dict()).to_dict()
            )
        if not isinstance(sae, RouteTrainingSAE):
            raise ValueError(f"override_sae must be a RouteTrainingSAE, got {type(sae).__name__}")
        self.sae = sae
        self.sae.to(self.cfg.device)
        self.evaluator = RoutedTrainingEvaluator(
            self.activations_store, n_eval_batches=self.cfg.n_eval_batches
        )

    def _init_live(self, override_dataset: HfDataset | None, override_model: HookedRootModule | None) -> None:
        """The model runs over the dataset as training goes (SAELens's usual path)."""
        if override_model is None:
            self.model = load_model(
                self.cfg.model_class_name,
                self.cfg.model_name,
                device=str(self.cfg.llm_device),
                model_from_pretrained_kwargs=self.cfg.model_from_pretrained_kwargs,
                hook_names=list(self.cfg.sae.hook_names),
            )
        else:
            self.model = override_model
        validate_route_run(self.cfg, self.model)
        self._compile_llm_if_needed()

        dataset = override_dataset
        if self.dist.enabled:
            dataset = shard_dataset(dataset if dataset is not None else _load_dataset(self.cfg), self.dist)
        self.activations_store = MultiLayerActivationsStore.from_route_config(
            self.model, self.cfg, override_dataset=dataset
        )

    def _init_from_cache(
        self, override_dataset: HfDataset | None, override_model: HookedRootModule | None
    ) -> None:
        """`use_cached_activations`: activations come from the routed cache; no model is loaded (evaluation
        is routed reconstruction on the cache's held-out sequences). A given `override_model` is only checked."""
        if override_dataset is not None:
            raise ValueError(
                "override_dataset cannot be combined with use_cached_activations=True: the tokens come from "
                "the cache at cached_activations_path"
            )
        self.model = override_model  # type: ignore[assignment]
        validate_route_run(self.cfg, override_model)
        self.activations_store = CachedMultiLayerActivationsStore.from_cache_config(
            self.cfg, override_model, rank=self.dist.rank, world_size=self.dist.world_size
        )

    def _compile_llm_if_needed(self) -> None:
        """`compile_llm`: the store compiles its own hook-free forward where the hooks allow it (see
        `compiled_forward.py`); SAELens's compiled `run_with_cache` is kept for the other hook points."""
        if self.cfg.compile_llm and not supports_compiled_forward(
            self.model, list(self.cfg.sae.hook_names), self.cfg.model_kwargs
        ):
            super()._compile_llm_if_needed()

    def _set_sae_metadata(self) -> None:
        super()._set_sae_metadata()
        # SAELens tools need one valid hook string; the last routed hook is where routing is decided.
        self.sae.cfg.metadata.hook_name = self.cfg.sae.hook_names[-1]
        self.sae.cfg.metadata.hook_names = list(self.cfg.sae.hook_names)

    def build_trainer(self, data_provider: Any) -> RouteSAETrainer:
        """Overridable: the trainer this run uses."""
        return RouteSAETrainer(
            sae=self.sae,
            data_provider=data_provider,
            evaluator=self.evaluator,
            save_checkpoint_fn=self.save_checkpoint,
            cfg=self.cfg.to_sae_trainer_config(),
        )

    def run(self) -> RouteTrainingSAE:
        """Train and save, holding `output_path` for the whole run (a second run on it is refused); then print
        the summary (where the SAE is, what each number is measured on) unless `cfg.verbose` is False."""
        with claim_output(self.cfg.output_path, self.overwrite, self.dist):
            if self.dist.is_main:
                remove_stale_partial_writes(self.cfg)
            sae = self._train_and_save()
        summary = format_summary(training_summary(self))
        logger.info(summary)
        if self.cfg.verbose and self.dist.is_main:
            print(summary, flush=True)
        return sae

    def _train_and_save(self) -> RouteTrainingSAE:
        self._set_sae_metadata()
        if self.cfg.logger.log_to_wandb:
            # Every rank runs the same logging code (its metrics are all-reduced); only rank 0 reports.
            wandb.init(
                project=self.cfg.logger.wandb_project,
                entity=self.cfg.logger.wandb_entity,
                config=self.global_cfg.to_dict(),
                name=self.cfg.logger.run_name,
                id=self.cfg.logger.wandb_id,
                mode=None if self.dist.is_main else "disabled",
            )
        if self.cfg.resume_from_checkpoint is not None:
            # The store's state first: an overlapped producer starts reading as soon as it exists.
            logger.info("Resuming from checkpoint: %s", self.cfg.resume_from_checkpoint)
            self.activations_store.load_from_checkpoint(self.cfg.resume_from_checkpoint)
        data_provider = training_batches(self.activations_store, self.cfg)
        try:
            trainer = self.build_trainer(data_provider)
            self.trainer = trainer
            if self.cfg.resume_from_checkpoint is not None:
                trainer.load_trainer_state(self.cfg.resume_from_checkpoint)
                self.sae.load_weights_from_checkpoint(self.cfg.resume_from_checkpoint)
            self._compile_sae_if_needed()
            sae = self.run_trainer_with_interruption_handling(trainer)
            if isinstance(data_provider, PrefetchingIterator):
                data_provider.close()  # the final evaluation reads the store from this thread
            self.end_to_end_history = self.run_end_to_end_phase(sae)
            self.final_metrics = self.evaluate_final()
            if self.end_to_end_history:
                first, last = self.end_to_end_history[0], self.end_to_end_history[-1]
                self.final_metrics |= {"end_to_end/steps": len(self.end_to_end_history),
                                       "end_to_end/kl_first_step": first["kl"], "end_to_end/kl_last_step": last["kl"]}
            if self.cfg.output_path is not None and self.dist.is_main:
                self.save_final_sae(
                    sae, self.cfg.output_path, log_feature_sparsity=trainer.log_feature_sparsity
                )
            if self.cfg.logger.log_to_wandb:
                wandb.finish()
            return sae  # type: ignore[return-value]
        finally:
            if isinstance(data_provider, PrefetchingIterator):
                data_provider.close()

    def run_end_to_end_phase(self, sae: RouteTrainingSAE) -> list[dict[str, float]]:
        """`sae.end_to_end_tokens` of the end-to-end KL phase on fresh store token batches (none when 0)."""
        n_tokens = self.cfg.sae.end_to_end_tokens
        if not n_tokens:
            return []
        per_batch = self.cfg.store_batch_size_prompts * self.cfg.context_size
        batches = (self.activations_store.get_batch_tokens() for _ in range(math.ceil(n_tokens / per_batch)))
        excluded = self.activations_store.exclude_special_tokens
        history = finetune_end_to_end(
            sae, self.model, batches, lr=self.cfg.sae.end_to_end_lr,
            mse_coefficient=self.cfg.sae.end_to_end_mse_coefficient,
            exclude_special_tokens=None if excluded is None else excluded.tolist(),
        )
        logger.info("end-to-end phase: %d steps, KL %.4g -> %.4g", len(history), history[0]["kl"], history[-1]["kl"])
        return history

    def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:  # type: ignore[override]
        """Ctrl-C / SIGTERM save a full checkpoint and end with `RunInterrupted` naming it (or saying nothing
        was saved). SAELens's handler writes only the store's state, into a checkpoint folder it never
        creates: a safetensors traceback, and the weights lost."""
        with interrupts_as_keyboard_interrupt():
            try:
                return trainer.fit()
            except (KeyboardInterrupt, InterruptedException):
                raise save_interrupted([trainer]) from None

    def sae_for_analysis(self) -> Any:
        """The trained SAE as an inference `RouteSAE` (loaded back from the output folder when there is one)."""
        from sae_lens import SAE

        if self.cfg.output_path is not None and Path(self.cfg.output_path, "cfg.json").exists():
            return SAE.load_from_disk(self.cfg.output_path, device=str(self.cfg.device))
        return self.sae

    def final_eval_batches(self) -> list[torch.Tensor]:
        """Fresh store batches for the final evaluation (a sweep reads them once for all its SAEs)."""
        return [
            self.activations_store.get_multi_layer_llm_batch() for _ in range(max(1, self.cfg.n_eval_batches))
        ]

    @torch.no_grad()
    def evaluate_final(self, batches: list[torch.Tensor] | None = None) -> dict[str, Any]:
        """Routed metrics of the trained SAE on `batches` (default: fresh store batches), plus the trainer's
        L0/dead latents."""
        self.sae.eval()
        batches = self.final_eval_batches() if batches is None else batches
        metrics: dict[str, Any] = routed_reconstruction_metrics(self.sae, batches)  # summed over ranks
        assert self.trainer is not None
        metrics["sparsity/dead_features"] = int(self.trainer.dead_neurons.sum().item())
        metrics["training_tokens"] = int(self.trainer.n_training_samples * self.dist.world_size)
        metrics["training_steps"] = int(self.trainer.n_training_steps)
        return metrics

    def save_final_sae(
        self,
        sae: TrainingSAE[Any],
        output_path: str,
        log_feature_sparsity: torch.Tensor | None = None,
    ) -> None:
        """The stock output folder (cfg.json, weights, sparsity, runner cfg), written atomically. An output that
        appeared during training is not replaced without `overwrite`: the error names where the SAE was kept."""
        with atomic_directory(output_path, overwrite=self.overwrite) as tmp:
            weights_path, cfg_path = sae.save_inference_model(str(tmp))
            sparsity_path = None
            if log_feature_sparsity is not None:
                sparsity_path = tmp / SPARSITY_FILENAME
                save_file({"sparsity": log_feature_sparsity}, sparsity_path)
            (tmp / RUNNER_CFG_FILENAME).write_text(strict_json(self.global_cfg.to_dict()))
            if self.final_metrics is not None:
                (tmp / "training_metrics.json").write_text(strict_json(self.final_metrics, indent=2))
        if self.cfg.logger.log_to_wandb:
            out = Path(output_path)
            # SAELens records `trainer.cfg` as the artifact's metadata: give it the global config.
            self.cfg.logger.log(
                SimpleNamespace(sae=sae, cfg=self.global_cfg),
                out / Path(weights_path).name,
                out / Path(cfg_path).name,
                sparsity_path=out / SPARSITY_FILENAME if sparsity_path is not None else None,
                wandb_aliases=["final_model"],
            )

    def save_checkpoint(self, checkpoint_path: Path | None) -> None:
        if isinstance(self.activations_store, CachedMultiLayerActivationsStore) and self.trainer is not None:
            # The trainer's count, not the store's: a prefetch thread may have read batches not yet trained on.
            self.activations_store.read_position = self.trainer.n_training_samples
        if self.dist.is_main and checkpoint_path is not None:
            # SAELens's runner writes the store state and `self.cfg` (here the per-rank one); write the global one.
            self.activations_store.save_to_checkpoint(checkpoint_path)
            (Path(checkpoint_path) / RUNNER_CFG_FILENAME).write_text(strict_json(self.global_cfg.to_dict()))


def per_rank_config(
    cfg: LanguageModelSAERunnerConfig[Any], info: DistInfo
) -> LanguageModelSAERunnerConfig[Any]:
    """Under torchrun, `train_batch_size_tokens` and `training_tokens` stay global: each rank takes 1/N."""
    if not info.enabled:
        return cfg
    for name in ("train_batch_size_tokens", "training_tokens"):
        if getattr(cfg, name) % info.world_size:
            raise ValueError(
                f"{name}={getattr(cfg, name)} must be divisible by the number of ranks ({info.world_size})"
            )
    local = copy.deepcopy(cfg)
    local.train_batch_size_tokens //= info.world_size
    local.training_tokens //= info.world_size
    local.device = rank_device(str(cfg.device), info)
    local.llm_device = rank_device(str(cfg.llm_device), info)
    local.act_store_device = rank_device(str(cfg.act_store_device), info)
    return local


def _load_dataset(cfg: LanguageModelSAERunnerConfig[Any]) -> Any:
    from datasets import load_dataset

    return load_dataset(
        cfg.dataset_path,
        split="train",
        streaming=cfg.streaming,
        trust_remote_code=cfg.dataset_trust_remote_code,  # type: ignore[arg-type]
    )


def training_summary(runner: RouteSAETrainingRunner) -> dict[str, Any]:
    """What a person wants to see after a run: where the SAE is and how good it is."""
    metrics = dict(runner.final_metrics or {})
    return {
        "output_path": runner.cfg.output_path,
        "normalized_mse": metrics.get("reconstruction_quality/normalized_mse"),
        "explained_variance": metrics.get("reconstruction_quality/explained_variance"),
        "l0": metrics.get("sparsity/l0"),
        "dead_latents": metrics.get("sparsity/dead_features"),
        "d_sae": runner.cfg.sae.d_sae,
        "training_tokens": metrics.get("training_tokens"),
        "routing_share": routing_shares(metrics),
        "routing_entropy_bits": metrics.get("routing/entropy_bits"),
        "eval_tokens": metrics.get("metrics/total_tokens_evaluated"),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"RouteSAE saved to: {summary['output_path']}",
        f"  measured on {summary.get('eval_tokens') or 'the'} tokens of fresh batches after training; "
        "x = each token's routed input (its routed layer, standardised, times the router weight)",
        f"  NormMSE            {summary['normalized_mse']:.4f}  mean over tokens of ||x_hat - x||^2 / ||x||^2 "
        "(the training loss)",
        f"  explained variance {summary['explained_variance']:.4f}  1 - sum ||x_hat - x||^2 / sum ||x - mean(x)||^2 "
        "(relative to the spread around the mean input, so below 1 - NormMSE when x has a large mean)",
        f"  L0                 {summary['l0']:.1f}",
        f"  dead latents       {summary['dead_latents']} / {summary['d_sae']}",
        f"  training tokens    {summary['training_tokens']}",
        f"  routing entropy    {summary['routing_entropy_bits']:.2f} bits "
        f"(max {math.log2(max(len(summary['routing_share']), 1)):.2f}: spread evenly; 0: one layer)",
        "  routing share per layer:",
    ]
    lines += [f"    {hook:<28} {share:6.1%}" for hook, share in summary["routing_share"].items()]
    return "\n".join(lines)
