"""End-to-end RouteSAE training throughput vs a bare model forward and SAELens's stock single-layer TopK run.

Side by side in one process, same random-weight model, same tokens, same d_sae/k/batch:
  (a) bare forward: `model(tokens, stop_at_layer=last routed block + 1)`;
  (b) SAELens's stock `LanguageModelSAETrainingRunner` + `TopKTrainingSAEConfig` on the last routed hook;
  (c) `RouteSAETrainingRunner` on all routed hooks, with its time split into model forward / buffer / SAE
  step;
  (d) `--overlap`: (c) with `prefetch_llm_batches` (the next batch's forward runs in a producer thread, on its
  own
      CUDA stream, while the SAE trains: `sae_lens_routing/training/trainer.py`);
  (e) `--sweep N`: `RouteSAESweepRunner` training N RouteSAEs (k/2, k, 2k, 4k, ...) from one forward per
  batch,
      overlapped too with `--overlap`; its aggregate SAE-tokens/s is N x its stream tokens/s.

Presets: `paper` = the paper's shape (Llama-3.2-1B-shaped HookedTransformer, 16 layers, d_model 2048, blocks
3..11,
d_sae 16384, k 64, 64 x 512-token batches, bf16 model + autocast on CUDA); `cpu` = a small shape that runs in
about a minute on 2 cores (a few with --overlap --sweep 4). Absolute times only mean something on a GPU.
The routed buffer's size (L x d x bytes per buffered token) is reported; its GPU peak is measured on CUDA
only.

    python benchmarks/train_throughput.py --preset cpu --overlap --sweep 4
    python benchmarks/train_throughput.py --preset paper --device cuda --compile-llm --compile-sae --overlap
    --sweep 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner
from sae_lens.config import LoggingConfig
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_lens_routing import RouteSAETrainingRunner, RouteTrainingSAEConfig
from sae_lens_routing.training.sweep import RouteSAESweepRunner

RESULTS = Path(__file__).parent / "results"


@dataclass
class Preset:
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_vocab: int
    routed_blocks: range
    d_sae: int
    k: int
    prompts: int  # sequences per model forward (and per SAE step)
    context: int
    steps: int
    warmup_steps: int
    buffer_batches: int  # n_batches_in_buffer (the routed buffer is L times a single-hook one)


PRESETS = {
    # SAELens sizes the mixing buffer as n_batches_in_buffer x context_size tokens: paper 128 x 512 = 2
    # batches
    # (65,536 tokens x 9 layers x 2048 x bf16 = 2.4 GB on the GPU for RouteSAE)
    "paper": Preset(16, 2048, 8192, 32, 8, 128256, range(3, 12), 16384, 64, 64, 512, 60, 12, 128),
    "cpu": Preset(8, 256, 1024, 8, 2, 4096, range(1, 6), 2048, 32, 8, 128, 12, 3, 16),
}


def build_model(p: Preset, device: str, dtype: torch.dtype) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=p.n_layers,
        d_model=p.d_model,
        d_mlp=p.d_mlp,
        n_heads=p.n_heads,
        n_key_value_heads=p.n_kv_heads,
        d_head=p.d_model // p.n_heads,
        d_vocab=p.d_vocab,
        n_ctx=p.context,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=p.d_model // p.n_heads,
        final_rms=True,
        device=device,
        dtype=dtype,
        seed=0,
    )
    return HookedTransformer(cfg).eval()


def token_dataset(p: Preset, n_rows: int) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    return Dataset.from_dict(
        {"tokens": torch.randint(1, p.d_vocab, (n_rows, p.context), generator=gen).tolist()}
    )


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: str) -> None:
    """Wait for this thread's stream only: a device-wide sync would also wait for the overlapped producer."""
    if device.startswith("cuda"):
        torch.cuda.current_stream().synchronize()


def runner_cfg(p: Preset, sae: Any, device: str, fast: bool, hook_name: str) -> LanguageModelSAERunnerConfig:
    batch = p.prompts * p.context
    return LanguageModelSAERunnerConfig(
        sae=sae,
        model_name="random",
        hook_name=hook_name,
        dataset_path="",
        is_dataset_tokenized=True,
        context_size=p.context,
        streaming=False,
        training_tokens=batch * p.steps,
        train_batch_size_tokens=batch,
        store_batch_size_prompts=p.prompts,
        n_batches_in_buffer=p.buffer_batches,
        device=device,
        dtype="bfloat16" if fast else "float32",
        autocast=fast,
        exclude_special_tokens=False,
        logger=LoggingConfig(log_to_wandb=False),
        output_path=None,
        verbose=False,
        lr=2e-4,
    )


def time_steps(runner: Any, store: Any, device: str, p: Preset, per_batch: int = 1) -> dict[str, float]:
    """Train through the runner and time it step by step (benchmark instrumentation only).

    Between two steps the trainer pulls the next batch (model forward + mixing buffer); inside a step it runs
    the
    SAE forward, backward and optimiser. The model forward is timed by wrapping the store's activation method.
    `per_batch`: trainer steps per batch (a sweep steps each of its SAEs on every batch). With overlap the
    forward runs in the producer thread during the steps, so forward + buffer + steps exceed the wall time.
    """
    from sae_lens.training.sae_trainer import SAETrainer

    stamps: list[tuple[float, float]] = []  # (step entry, step exit)
    forward_time = [0.0]
    forward_name = (
        "get_multi_layer_activations" if hasattr(store, "get_multi_layer_activations") else "get_activations"
    )
    forward = getattr(store, forward_name)
    warmup, steps = p.warmup_steps * per_batch, p.steps * per_batch

    def timed_forward(tokens: torch.Tensor) -> Any:
        sync(device)
        t = time.perf_counter()
        out = forward(tokens)
        sync(device)
        if warmup <= len(stamps) < steps:  # not the final evaluation after training
            forward_time[0] += time.perf_counter() - t
        return out

    setattr(store, forward_name, timed_forward)
    step = SAETrainer.step

    def timed_step(self: Any, batch: torch.Tensor) -> Any:
        sync(device)
        t = time.perf_counter()
        out = step(self, batch)
        sync(device)
        stamps.append((t, time.perf_counter()))
        return out

    SAETrainer.step = timed_step  # type: ignore[method-assign]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        runner.run()
    finally:
        SAETrainer.step = step  # type: ignore[method-assign]
    measured = stamps[warmup:]
    elapsed = measured[-1][1] - stamps[warmup - 1][1]
    sae_step = sum(exit_ - entry for entry, exit_ in measured)
    out = {
        "tokens_per_s": len(measured) / per_batch * p.prompts * p.context / elapsed,
        "seconds": elapsed,
        "run_seconds": time.perf_counter() - start,
        "model_forward_s": forward_time[0],
        "buffer_s": max(elapsed - sae_step - forward_time[0], 0.0),
        "sae_step_s": sae_step,
    }
    if device.startswith("cuda"):
        out["gpu_peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    return out


def median_run(runs: list[dict[str, float]]) -> dict[str, Any] | None:
    """The run with the median throughput, with every repeat's tokens/s alongside."""
    if not runs:
        return None
    ranked = sorted(runs, key=lambda r: r["tokens_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "all_tokens_per_s": [r["tokens_per_s"] for r in runs]}


def split(run: dict[str, float]) -> dict[str, float]:
    return {k: run[k] for k in ("model_forward_s", "buffer_s", "sae_step_s", "run_seconds")}


def routed_buffer(p: Preset, n_layers: int, dtype: torch.dtype, device: str) -> dict[str, Any]:
    """The mixing buffer SAELens's loader keeps: n_batches_in_buffer x context tokens, each L x d_model."""
    tokens = p.buffer_batches * p.context
    per_token = n_layers * p.d_model * dtype.itemsize
    return {
        "buffer_tokens": tokens,
        "bytes_per_buffered_token": per_token,
        "buffer_bytes": tokens * per_token,
        "note": "L x d x bytes per buffered token; "
        "while refilling, the buffer and its concatenated/shuffled copy "
        "coexist, so the transient peak is about twice buffer_bytes plus one fill"
        + ("" if device.startswith("cuda") else "; GPU peak memory was not measured (CPU run)"),
    }


def bare_forward(model: HookedTransformer, p: Preset, device: str, stop: int) -> float:
    tokens = torch.as_tensor(token_dataset(p, p.prompts)["tokens"], device=device)
    with torch.no_grad():
        for _ in range(2):
            model(tokens, stop_at_layer=stop)
        sync(device)
        t = time.perf_counter()
        n = max(3, p.steps // 2)
        for _ in range(n):
            model(tokens, stop_at_layer=stop)
        sync(device)
    return n * tokens.numel() / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sparse-decode", action="store_true", help="RouteSAE use_sparse_activations")
    parser.add_argument(
        "--compile-sae", action="store_true", help="torch.compile the SAE training step (both runs)"
    )
    parser.add_argument(
        "--compile-llm",
        action="store_true",
        help="compile_llm in both runs (RouteSAE: the store's compiled hook-free forward; "
        "TopK: SAELens's compiled "
        "run_with_cache, eager if that fails); the bare forward stays eager",
    )
    parser.add_argument("--overlap", action="store_true", help="also time RouteSAE with prefetch_llm_batches")
    parser.add_argument(
        "--sweep", type=int, default=0, help="also time a sweep of N RouteSAEs from one forward"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="interleaved repeats of the RouteSAE contenders"
    )
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine contention)")
    args = parser.parse_args()
    p = PRESETS[args.preset]
    fast = args.device.startswith("cuda")
    model = build_model(p, args.device, torch.bfloat16 if fast else torch.float32)
    hooks = [f"blocks.{i}.hook_resid_post" for i in p.routed_blocks]
    n_rows = p.prompts * (p.steps + 4)

    bare = bare_forward(model, p, args.device, p.routed_blocks[-1] + 1)

    topk_cfg = runner_cfg(
        p, TopKTrainingSAEConfig(d_in=p.d_model, d_sae=p.d_sae, k=p.k), args.device, fast, hooks[-1]
    )
    topk_cfg.compile_sae = args.compile_sae
    topk_cfg.compile_llm = args.compile_llm
    topk_compile_llm_error = None

    def run_topk() -> dict[str, float]:
        runner = LanguageModelSAETrainingRunner(
            topk_cfg, override_dataset=token_dataset(p, n_rows), override_model=model
        )
        return time_steps(runner, runner.activations_store, args.device, p)

    try:
        topk = run_topk()
    except KeyError as err:  # SAELens's compiled run_with_cache lost its hook (seen on an H100, torch 2.11)
        if not args.compile_llm:
            raise
        topk_compile_llm_error = repr(err)
        vars(model).pop("run_with_cache", None)
        topk_cfg.compile_llm = False
        topk = run_topk()
    vars(model).pop("run_with_cache", None)  # SAELens compiles it onto the shared model instance

    route_sae = RouteTrainingSAEConfig(
        d_in=p.d_model, d_sae=p.d_sae, k=p.k, hook_names=hooks, use_sparse_activations=args.sparse_decode
    )

    def route_cfg(overlap: bool) -> LanguageModelSAERunnerConfig:
        cfg = runner_cfg(p, route_sae, args.device, fast, hooks[-1])
        cfg.compile_sae = args.compile_sae
        cfg.compile_llm = args.compile_llm
        cfg.prefetch_llm_batches = overlap
        return cfg

    def run_route(overlap: bool) -> dict[str, float]:
        runner = RouteSAETrainingRunner(
            route_cfg(overlap), override_dataset=token_dataset(p, n_rows), override_model=model
        )
        return time_steps(runner, runner.activations_store, args.device, p)

    # Interleaved repeats (median reported): on a shared machine the load changes between contenders.
    runs: dict[str, list[dict[str, float]]] = {"route": [], "overlapped": [], "sweep": []}
    for _ in range(args.repeats):
        runs["route"].append(run_route(False))
        if args.overlap:
            runs["overlapped"].append(run_route(True))
        if args.sweep:
            variants = [
                {"name": f"k{p.k * 2**i // 2}", "sae": {"k": p.k * 2**i // 2}} for i in range(args.sweep)
            ]
            runner = RouteSAESweepRunner(
                route_cfg(args.overlap),
                variants,
                override_dataset=token_dataset(p, n_rows),
                override_model=model,
            )
            store = runner.runners[0].activations_store
            runs["sweep"].append(time_steps(runner, store, args.device, p, per_batch=args.sweep))
    route, overlapped, sweep = (median_run(runs[k]) for k in ("route", "overlapped", "sweep"))
    assert route is not None

    load = os.getloadavg()
    result = {
        "device": device_name(args.device),
        "preset": args.preset,
        "routed_layers": len(hooks),
        "batch_tokens": p.prompts * p.context,
        "d_sae": p.d_sae,
        "k": p.k,
        "sparse_decode": args.sparse_decode,
        "compile_sae": args.compile_sae,
        "compile_llm": args.compile_llm,
        "overlap": args.overlap,
        "sweep": args.sweep,
        "topk_compile_llm_error": topk_compile_llm_error,
        "bare_forward_tokens_per_s": bare,
        "topk_single_layer_tokens_per_s": topk["tokens_per_s"],
        "routesae_tokens_per_s": route["tokens_per_s"],
        "repeats": args.repeats,
        "routesae_all_tokens_per_s": route["all_tokens_per_s"],
        "routesae_over_topk": route["tokens_per_s"] / topk["tokens_per_s"],
        "routesae_over_bare_forward": route["tokens_per_s"] / bare,
        "routesae_split_s": split(route),
        "topk_split_s": split(topk),
        "routed_buffer": routed_buffer(p, len(hooks), torch.bfloat16 if fast else torch.float32, args.device),
        "load_average_1_5_15_min": load,
    }
    if overlapped is not None:
        result["routesae_overlapped_tokens_per_s"] = overlapped["tokens_per_s"]
        result["routesae_overlapped_all_tokens_per_s"] = overlapped["all_tokens_per_s"]
        result["overlapped_over_sequential"] = overlapped["tokens_per_s"] / route["tokens_per_s"]
        result["routesae_overlapped_split_s"] = split(overlapped)
    if sweep is not None:
        result["sweep_variants_k"] = [p.k * 2**i // 2 for i in range(args.sweep)]
        result["sweep_stream_tokens_per_s"] = sweep["tokens_per_s"]
        result["sweep_all_stream_tokens_per_s"] = sweep["all_tokens_per_s"]
        result["sweep_aggregate_sae_tokens_per_s"] = sweep["tokens_per_s"] * args.sweep
        # cost of the sweep in wall time per batch, relative to one RouteSAE run
        result["sweep_cost_over_one_sequential_run"] = route["tokens_per_s"] / sweep["tokens_per_s"]
        if overlapped is not None:
            result["sweep_cost_over_one_overlapped_run"] = overlapped["tokens_per_s"] / sweep["tokens_per_s"]
        result["sweep_split_s"] = split(sweep)
    for name, run in (("routesae", route), ("topk", topk), ("overlapped", overlapped), ("sweep", sweep)):
        if run is not None and "gpu_peak_memory_bytes" in run:
            result.setdefault("gpu_peak_memory_bytes", {})[name] = run["gpu_peak_memory_bytes"]
    if args.note:
        result["note"] = args.note
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"train_throughput_{args.preset}.json").write_text(json.dumps(result, indent=2))
    main_file = (
        RESULTS / "train_throughput.json"
    )  # the headline file: a paper-shape GPU run wins over a CPU one
    previous = json.loads(main_file.read_text()) if main_file.exists() else {}
    if args.preset == "paper" or previous.get("preset") != "paper":
        main_file.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
