"""Data-parallel training under `torchrun`: process-group set-up and the few collectives a RouteSAE needs.

Why not `DistributedDataParallel`: SAELens's trainer calls `sae.training_forward_pass` directly, not
`module.forward`, so a DDP wrapper would never arm its gradient reducer. Averaging each parameter's gradient
in a post-accumulate hook gives the same result (identical parameters on every rank after every step, the
same update as one process with the whole batch) without touching the trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Number
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; world_size 1 means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process group, if one is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        backend=str(dist.get_backend()),
    )


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); no-op otherwise.

    NCCL for CUDA devices, gloo for CPU. Each rank uses `cuda:<LOCAL_RANK>`, so a config saying "cuda" works
    unchanged on every node.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist_info()


def rank_device(device: str, info: DistInfo) -> str:
    """`cuda` -> `cuda:<local_rank>` under torchrun; other devices unchanged."""
    if info.enabled and device in ("cuda", "cuda:0"):
        return f"cuda:{info.local_rank}"
    return device


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Start every rank from rank 0's initialisation."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=src)


def average_gradients_in_backward(module: nn.Module) -> list[Any]:
    """Register hooks that replace each parameter's gradient with its mean over ranks as soon as it is
    accumulated, so gradient clipping and the optimiser see the global gradient."""
    world_size = dist.get_world_size()

    def hook(param: torch.Tensor) -> None:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world_size)

    return [p.register_post_accumulate_grad_hook(hook) for p in module.parameters() if p.requires_grad]


def all_reduce_mean_scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Average every numeric (or 0-d tensor) entry over ranks; other entries (histograms...) stay local.

    Keys are reduced in sorted order in one tensor, so every rank must call this with the same keys.
    """
    keys = sorted(k for k, v in values.items() if _is_scalar(v))
    if not keys:
        return dict(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        packed = packed.cuda()
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= dist.get_world_size()
    out = dict(values)
    for key, value in zip(keys, packed.tolist()):
        out[key] = value
    return out


def _is_scalar(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, Number):
        return True
    return isinstance(value, torch.Tensor) and value.numel() == 1


def shard_dataset(dataset: Any, info: DistInfo) -> Any:
    """This rank's disjoint part of a Hugging Face dataset (map-style or streaming)."""
    if not info.enabled:
        return dataset
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(dataset, rank=info.rank, world_size=info.world_size)
