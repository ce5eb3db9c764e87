"""SAELens's `SAETrainer`, data-parallel under torchrun via grad hooks (DDP's reducer would never arm)."""

import math
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from numbers import Number
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import wandb
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import TrainStepOutput
from sae_lens.training.prefetch import PrefetchingIterator
from sae_lens.training.sae_trainer import SAETrainer

from sae_lens_routing.atomic import atomic_directory
from sae_lens_routing.saes.routed_metrics import RoutedMetrics, routing_shares


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    enabled = property(lambda self: self.world_size > 1)
    is_main = property(lambda self: self.rank == 0)


def dist_info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str) -> DistInfo:
    """Join torchrun's process group (WORLD_SIZE > 1): NCCL on CUDA, else gloo; a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist_info()


def rank_device(device: str, info: DistInfo) -> str:
    """`cuda` -> `cuda:<local_rank>` under torchrun, so one config works unchanged on every node."""
    return f"cuda:{info.local_rank}" if info.enabled and device in ("cuda", "cuda:0") else device


def all_reduce_mean_scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Every numeric entry averaged over ranks (in sorted key order: every rank passes the same keys)."""
    keys = sorted(k for k, v in values.items() if not isinstance(v, bool)
                  and (isinstance(v, Number) or (isinstance(v, torch.Tensor) and v.numel() == 1)))
    if not keys:
        return dict(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    packed = packed.cuda() if dist.get_backend() == "nccl" else packed
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return {**values, **dict(zip(keys, (packed / dist.get_world_size()).tolist()))}


class RouteSAETrainer(SAETrainer):
    """`SAETrainer` with global gradients, dead latents, logs and evals under torchrun; atomic checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._completed_steps = 0
        self.dist = dist_info()
        if self.dist.enabled:
            self._join_ranks()
        max_norm = getattr(self.sae.cfg, "max_grad_norm", 1.0)
        if max_norm != 1.0:  # SAETrainer._train_step clips at 1.0, no option: the step sees the grads before
            self._unclipped: dict[torch.Tensor, torch.Tensor] = {}
            for p in (p for p in self.sae.parameters() if p.requires_grad):  # after the rank averaging
                p.register_post_accumulate_grad_hook(lambda p: self._unclipped.update({p: p.grad.clone()}))
            self.optimizer.register_step_pre_hook(lambda *_: self._restore_unclipped(max_norm))

    def _restore_unclipped(self, max_norm: float | None) -> None:
        for param, grad in self._unclipped.items():
            param.grad.copy_(grad)  # type: ignore[union-attr]
        self._unclipped.clear()
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), max_norm)

    def _join_ranks(self) -> None:
        with torch.no_grad():  # every rank starts from rank 0's initialisation
            for tensor in [*self.sae.parameters(), *self.sae.buffers()]:
                dist.broadcast(tensor.data, src=0)

        def average(param: torch.Tensor) -> None:  # clipping and the optimiser see the global gradient
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(self.dist.world_size)

        self._grad_hooks = [p.register_post_accumulate_grad_hook(average) for p in self.sae.parameters()
                            if p.requires_grad]
        if self.evaluator is not None:
            local = self.evaluator
            self.evaluator = lambda sae, data, scaler: all_reduce_mean_scalars(local(sae, data, scaler))

    @property
    def dead_feature_window_steps(self) -> int:
        """`dead_feature_window_tokens` (global tokens: the same on any number of ranks) in steps."""
        tokens = getattr(self.sae.cfg, "dead_feature_window_tokens", None)
        if tokens is None:
            return int(self.cfg.dead_feature_window)
        return max(1, math.ceil(tokens / (self.cfg.train_batch_size_samples * self.dist.world_size)))

    def _update_pbar(self, step_output: TrainStepOutput, pbar: Any, update_interval: int = 100) -> None:
        """SAELens's bar (a private method, no option) moves every 100 steps: a short run sat at 0."""
        every = max(1, min(update_interval, self.cfg.total_training_steps // 20))
        super()._update_pbar(step_output, pbar, update_interval=every)

    @property
    def dead_neurons(self) -> torch.Tensor:
        return (self.n_forward_passes_since_fired > self.dead_feature_window_steps).bool()

    def step(self, batch: torch.Tensor) -> TrainStepOutput:
        freq_before = self.act_freq_scores.clone() if self.dist.enabled else None
        output = super().step(batch)
        if freq_before is not None:  # a latent that fired on any rank fired: same dead mask and aux loss
            dist.all_reduce(self.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)
            delta = self.act_freq_scores - freq_before
            dist.all_reduce(delta, op=dist.ReduceOp.SUM)
            self.act_freq_scores = freq_before + delta
            self.n_frac_active_samples += (self.dist.world_size - 1) * self.cfg.train_batch_size_samples
        self._completed_steps = self.n_training_steps + 1  # fit() counts this step after checkpointing it
        every = getattr(self.sae.cfg, "unit_norm_decoder_every", 0)
        last = self.n_training_steps + 1 >= self.cfg.total_training_steps  # the official loop ends projected
        if every and (self.n_training_steps % every == 0 or last):  # after the optimizer step, as official
            self.sae.project_decoder_to_unit_norm()
        return output

    @torch.no_grad()
    def build_train_step_log_dict(self, output: TrainStepOutput, n_training_samples: int) -> dict[str, Any]:
        log = super().build_train_step_log_dict(output, n_training_samples)
        if not self.dist.enabled:
            return log
        samples = n_training_samples * self.dist.world_size
        return {**all_reduce_mean_scalars(log), "details/n_training_samples": samples}

    def save_trainer_state(self, checkpoint_path: Path) -> None:
        """Record the steps completed: `fit()` checkpoints a step before counting it."""
        counted = self.n_training_steps
        self.n_training_steps = max(counted, self._completed_steps)
        try:
            super().save_trainer_state(checkpoint_path)
        finally:
            self.n_training_steps = counted

    def load_trainer_state(self, checkpoint_path: Path | str) -> None:
        """Thresholds the interrupted run already passed are not saved again."""
        super().load_trainer_state(checkpoint_path)
        self._completed_steps = self.n_training_steps
        self.checkpoint_thresholds = [t for t in self.checkpoint_thresholds if t >= self.n_training_samples]

    def save_checkpoint(self, checkpoint_name: str, base_path: Any = None, wandb_aliases: Any = None) -> None:
        """Rank 0 writes under a hidden name, then renames: a killed save never looks complete."""
        base = base_path if base_path is not None else self.cfg.checkpoint_path
        if self.dist.is_main and base is None:
            super().save_checkpoint(checkpoint_name, base_path=base_path, wandb_aliases=wandb_aliases)
        elif self.dist.is_main:
            with atomic_directory(Path(base) / checkpoint_name) as tmp:
                super().save_checkpoint(tmp.name, base_path=base, wandb_aliases=wandb_aliases)
        if self.dist.enabled:
            dist.barrier()


class OverlappedBatches(PrefetchingIterator[Any]):
    """A `PrefetchingIterator` whose CUDA producer copies on its own stream; the trainer waits on an event."""

    def __init__(self, source: Iterator[torch.Tensor], device: str | torch.device, prefetch: int = 1):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        super().__init__(self._staged(source), prefetch=prefetch)

    def _staged(self, source: Iterator[torch.Tensor]) -> Iterator[tuple[torch.Tensor, Any]]:
        if self.stream is None:
            yield from ((batch, None) for batch in source)
            return
        while True:
            with torch.cuda.stream(self.stream):
                batch = next(source, None)
                if batch is None:
                    return
                if batch.device.type == "cpu":
                    batch = batch.pin_memory()
                batch = batch.to(self.device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(self.stream)
            yield batch, ready

    def __next__(self) -> torch.Tensor:
        batch, ready = super().__next__()
        if ready is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(ready)
            batch.record_stream(consumer)  # its memory is not reused by the producer's stream too early
        return batch


def training_batches(store: Iterator[torch.Tensor], cfg: LanguageModelSAERunnerConfig[Any]) -> Any:
    """The store, or `OverlappedBatches` over it; reseeded: the data order depends on seed and tokens only."""
    torch.manual_seed(cfg.seed)
    depth = int(cfg.prefetch_llm_batches)  # True: 1
    return OverlappedBatches(iter(store), cfg.device, prefetch=depth) if depth else store


def eval_batches(store: Any, n: int) -> list[torch.Tensor]:
    return [store.get_multi_layer_llm_batch() for _ in range(max(1, n))]


@torch.no_grad()
def routed_reconstruction_metrics(sae: Any, batches: list[torch.Tensor]) -> dict[str, Any]:
    """`RoutedMetrics` over raw [n, L, d_in] batches, summed over torchrun ranks."""
    metrics = RoutedMetrics(list(sae.cfg.hook_names), sae.cfg.d_sae, sae.cfg.d_in)
    for acts in batches:
        metrics.update(sae.forward_routed(acts.to(sae.device)))
    metrics.all_reduce()
    return metrics.compute()


@dataclass
class RoutedTrainingEvaluator:
    """SAELens's in-training evaluation, routed: the stock one would splice a single hook."""

    activations_store: Any
    n_eval_batches: int = 2

    def __call__(self, sae: Any, data_provider: Any, activation_scaler: Any) -> dict[str, Any]:
        # The store's token generator cannot run in two threads: a prefetch producer waits.
        with data_provider.paused() if isinstance(data_provider, PrefetchingIterator) else nullcontext():
            batches = eval_batches(self.activations_store, self.n_eval_batches)
        metrics = {f"eval/{k}": v for k, v in routed_reconstruction_metrics(sae, batches).items()}
        if wandb.run is not None and not getattr(wandb.run, "disabled", False):
            shares = routing_shares({k.removeprefix("eval/"): v for k, v in metrics.items()})
            table = wandb.Table(columns=["layer", "share"], data=[[h, shares[h]] for h in sae.cfg.hook_names])
            metrics["plots/routing_share"] = wandb.plot.bar(table, "layer", "share",
                                                            title="Routing share per layer")
        return metrics
