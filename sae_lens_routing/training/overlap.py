"""The batches a trainer pulls: the model forward for the next batch overlapped with the SAE step on this one.

SAELens's `prefetch_llm_batches` wraps the store in a `PrefetchingIterator`: a producer thread runs `next(store)`
(model forward + mixing buffer) while the trainer steps, and torch releases the GIL inside its kernels, so on
the CPU the two really run side by side. On CUDA that alone overlaps only the Python and launch overhead: both
threads launch onto the same default stream, so the GPU still runs the forward and the SAE step one after the
other; and with `act_store_device="cpu"` every batch is copied host->device inside the SAE step, from pageable
memory, blocking. `OverlappedBatches` is that `PrefetchingIterator` (its `paused()`/`close()` are what the
evaluator and the runner rely on) whose producer runs on its own CUDA stream and delivers each batch already on
the SAE's device (pinned memory, non-blocking copy on the producer's stream); the trainer's stream waits for it
on the GPU (an event, no host sync).

The store's mixing buffer draws its shuffles from torch's global generator, which nothing else draws from while
a RouteSAE trains; `training_batches` reseeds it with `cfg.seed` when training starts, so the data order depends
on the seed and the tokens only: sequential and overlapped runs, and every SAE of a sweep, see the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.training.prefetch import PrefetchingIterator

Staged = tuple[torch.Tensor, "torch.cuda.Event | None"]


class OverlappedBatches(PrefetchingIterator[Any]):
    """Batches produced in a background thread (and, on CUDA, on a side stream) while the consumer trains."""

    def __init__(self, source: Iterator[torch.Tensor], device: str | torch.device, prefetch: int = 1):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        super().__init__(_staged(source, self.device, self.stream), prefetch=prefetch)

    def __next__(self) -> torch.Tensor:
        batch, ready = super().__next__()
        if ready is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(ready)  # the GPU waits, not the host
            batch.record_stream(consumer)  # its memory is not reused by the producer's stream too early
        return batch


def _staged(
    source: Iterator[torch.Tensor], device: torch.device, stream: torch.cuda.Stream | None
) -> Iterator[Staged]:
    """(batch on `device`, event recorded when it is ready); everything runs on `stream` when there is one."""
    if stream is None:
        for batch in source:
            yield batch, None
        return
    while True:
        with torch.cuda.stream(stream):
            try:
                batch = next(source)
            except StopIteration:
                return
            if batch.device.type == "cpu":
                batch = batch.pin_memory()
            batch = batch.to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        yield batch, ready


def prefetch_depth(cfg: LanguageModelSAERunnerConfig[Any]) -> int:
    """SAELens's `prefetch_llm_batches`: True means one batch ahead, an int that many, 0/False off."""
    value = cfg.prefetch_llm_batches
    return (1 if value else 0) if isinstance(value, bool) else int(value)


def training_batches(store: Iterator[torch.Tensor], cfg: LanguageModelSAERunnerConfig[Any]) -> Any:
    """What the trainer pulls: the store itself, or an `OverlappedBatches` over it with `prefetch_llm_batches`.

    Reseeds the global generator (the mixing buffer's shuffles) with `cfg.seed` first: the SAE's initialisation,
    drawn before, no longer shifts the data order, so a sweep's SAEs each see their solo run's batches."""
    torch.manual_seed(cfg.seed)
    depth = prefetch_depth(cfg)
    if depth == 0:
        return store
    return OverlappedBatches(iter(store), cfg.device, prefetch=depth)


def close_batches(batches: Any) -> None:
    """Stop a producer thread, if any (the final evaluation reads the store from the calling thread)."""
    if isinstance(batches, PrefetchingIterator):
        batches.close()
