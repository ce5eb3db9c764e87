"""Probe: does a short end-to-end KL phase (`training/end_to_end.py`) lower a routed SAE's KL on held-out
text?

SmolLM2-135M-Instruct, the demo's routed layers (blocks 3..9), 400 BBC documents of 128 tokens
(`corpus_tokens`
seed 5): 300 cached and trained on (3 epochs, batch 2048, lr 5e-4, 5% warm-up / 20% decay, d_sae 2048, k 32,
defaults otherwise), 32 held out for evaluation, 64 for the end-to-end phase (8 steps of 8 documents, lr
1e-4).
Scored by `run_route_evals` before and after the phase on the same held-out tokens.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/end_to_end_probe.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig

from sae_lens_routing import RouteTrainingSAE, RouteTrainingSAEConfig
from sae_lens_routing.analysis.evals import run_route_evals
from sae_lens_routing.atomic import atomic_write_text
from sae_lens_routing.offline.corpus import corpus_tokens
from sae_lens_routing.offline.local_model import load_local_model
from sae_lens_routing.saes.routed_activations import routed_activations
from sae_lens_routing.training.end_to_end import finetune_end_to_end
from sae_lens_routing.training.trainer import RouteSAETrainer

HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3, 10)]
KEYS = [
    "reconstruction_quality/normalized_mse",
    "model_behavior_preservation/kl_div_with_sae",
    "model_performance_preservation/delta_ce",
    "routing/entropy_bits",
    "features/n_counted",
]
BATCH = 2048


def main(e2e_lr: float = 1e-4) -> None:
    torch.manual_seed(0)
    model = load_local_model("smollm2")
    tokens = corpus_tokens(model, "bbcnews", 400, 128, seed=5)
    train, held_out, e2e = tokens[:300], tokens[300:332], tokens[332:396]
    start = time.perf_counter()
    acts = torch.cat(
        [routed_activations(model, b, HOOKS)[0][:, 1:].reshape(-1, len(HOOKS), 576) for b in train.split(16)]
    )
    timing = {"cache_seconds": round(time.perf_counter() - start, 1)}

    sae = RouteTrainingSAE(
        RouteTrainingSAEConfig(d_in=576, d_sae=2048, k=32, hook_names=HOOKS, use_sparse_activations=True)
    )
    steps = 3 * len(acts) // BATCH
    gen = torch.Generator().manual_seed(0)

    def batches() -> Iterator[torch.Tensor]:
        while True:
            for idx in torch.randperm(len(acts), generator=gen).split(BATCH):
                if len(idx) == BATCH:
                    yield acts[idx]

    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=5e-4,
        lr_end=5e-4,
        lr_scheduler_name="constant",
        lr_warm_up_steps=steps // 20,
        lr_decay_steps=steps // 5,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
    )
    RouteSAETrainer(cfg=cfg, sae=sae, data_provider=batches()).fit()
    results: dict[str, dict[str, float]] = {}

    def score(tag: str) -> None:
        m = run_route_evals(sae.eval(), model, held_out, batch_size=8, exclude_special_tokens=[0])
        results[tag] = {k: round(m[k], 4) for k in KEYS}
        print(tag, results[tag], flush=True)

    score("main")
    start = time.perf_counter()
    finetune_end_to_end(sae, model, e2e.split(8), lr=e2e_lr, exclude_special_tokens=[0], log_every=2)
    timing["end_to_end_seconds"] = round(time.perf_counter() - start, 1)
    score(f"e2e lr {e2e_lr:g}")
    path = Path(__file__).parent / "results" / "end_to_end_probe.json"
    atomic_write_text(
        path, json.dumps({"device": f"CPU, {torch.get_num_threads()} threads", **results, **timing}, indent=2)
    )


if __name__ == "__main__":
    main()
