"""`RouteSAETrainer`: SAELens's `SAETrainer`, made safe to run on several ranks at once.

On one process it is exactly `SAETrainer`. Under torchrun (a process group is initialised) it averages
gradients in backward, keeps the dead-latent statistics global (a latent that fired on any rank fired), averages
logged metrics and eval results over ranks, and lets only rank 0 write checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from sae_lens.saes.sae import TrainStepOutput
from sae_lens.training.sae_trainer import SAETrainer

from sae_lens_routing.atomic import atomic_directory
from sae_lens_routing.training.distributed import (
    all_reduce_mean_scalars,
    average_gradients_in_backward,
    broadcast_parameters,
    dist_info,
)


class RouteSAETrainer(SAETrainer):
    """`SAETrainer` with data-parallel hooks; uses only the trainer's public seams (step, checkpoint, logs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._completed_steps = 0
        self.dist = dist_info()
        if self.dist.enabled:
            broadcast_parameters(self.sae)
            self._grad_hooks = average_gradients_in_backward(self.sae)
            if self.evaluator is not None:
                local_evaluator = self.evaluator

                def evaluator(sae: Any, data_provider: Any, scaler: Any) -> dict[str, Any]:
                    return all_reduce_mean_scalars(local_evaluator(sae, data_provider, scaler))

                self.evaluator = evaluator

    @property
    def dead_feature_window_steps(self) -> int:
        """The dead-latent window in steps: the SAE's `dead_feature_window_tokens` (global tokens, so the
        same on any number of ranks) when set, else the runner's `dead_feature_window`."""
        tokens = getattr(self.sae.cfg, "dead_feature_window_tokens", None)
        if tokens is None:
            return int(self.cfg.dead_feature_window)
        global_batch = self.cfg.train_batch_size_samples * self.dist.world_size
        return max(1, math.ceil(tokens / global_batch))

    @property
    def dead_neurons(self) -> torch.Tensor:
        return (self.n_forward_passes_since_fired > self.dead_feature_window_steps).bool()

    def step(self, batch: torch.Tensor) -> TrainStepOutput:
        output = self._step(batch)
        self._completed_steps = self.n_training_steps + 1  # fit() counts this step after checkpointing it
        every = getattr(self.sae.cfg, "unit_norm_decoder_every", 0)
        if every and self.n_training_steps % every == 0:
            # After the optimizer step, as the official loop does (`batch_idx % steps == 0`).
            self.sae.project_decoder_to_unit_norm()
        return output

    def _step(self, batch: torch.Tensor) -> TrainStepOutput:
        if not self.dist.enabled:
            return super().step(batch)
        freq_before = self.act_freq_scores.clone()
        output = super().step(batch)
        # Global dead-latent bookkeeping: same dead mask (hence same aux loss) on every rank.
        dist.all_reduce(self.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)
        delta = self.act_freq_scores - freq_before
        dist.all_reduce(delta, op=dist.ReduceOp.SUM)
        self.act_freq_scores = freq_before + delta
        self.n_frac_active_samples += (self.dist.world_size - 1) * self.cfg.train_batch_size_samples
        return output

    @torch.no_grad()
    def build_train_step_log_dict(self, output: TrainStepOutput, n_training_samples: int) -> dict[str, Any]:
        log = super().build_train_step_log_dict(output, n_training_samples)
        if not self.dist.enabled:
            return log
        log = all_reduce_mean_scalars(log)
        log["details/n_training_samples"] = n_training_samples * self.dist.world_size
        return log

    def save_trainer_state(self, checkpoint_path: Path) -> None:
        """Record the steps completed so far. `fit()` checkpoints a step before counting it, so SAELens saves a
        step count one behind its own optimizer and scheduler state, and a resumed run ends one step short."""
        counted = self.n_training_steps
        self.n_training_steps = max(counted, self._completed_steps)
        try:
            super().save_trainer_state(checkpoint_path)
        finally:
            self.n_training_steps = counted

    def load_trainer_state(self, checkpoint_path: Path | str) -> None:
        """Resume the checkpoint schedule too: thresholds the interrupted run already passed were saved then,
        and would otherwise all be written again in the first steps after resuming."""
        super().load_trainer_state(checkpoint_path)
        self._completed_steps = self.n_training_steps
        self.checkpoint_thresholds = [t for t in self.checkpoint_thresholds if t >= self.n_training_samples]

    def save_checkpoint(
        self,
        checkpoint_name: str,
        base_path: Path | str | None = None,
        wandb_aliases: list[str] | None = None,
    ) -> None:
        if self.dist.is_main:
            self._save_checkpoint_atomically(checkpoint_name, base_path, wandb_aliases)
        if self.dist.enabled:
            dist.barrier()

    def _save_checkpoint_atomically(
        self, checkpoint_name: str, base_path: Path | str | None, wandb_aliases: list[str] | None
    ) -> None:
        """Write the whole checkpoint (weights, trainer and store state) under a hidden name, then rename it:
        a run killed mid-save never leaves a checkpoint folder that looks complete but is not, and a full
        disk is reported as such, with the partial files removed."""
        base = base_path if base_path is not None else self.cfg.checkpoint_path
        if base is None:
            super().save_checkpoint(checkpoint_name, base_path=base_path, wandb_aliases=wandb_aliases)
            return
        with atomic_directory(Path(base) / checkpoint_name) as tmp:
            super().save_checkpoint(tmp.name, base_path=base, wandb_aliases=wandb_aliases)
