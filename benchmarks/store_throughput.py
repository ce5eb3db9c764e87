"""MultiLayerActivationsStore tokens/s vs a bare HookedTransformer forward with the same stop_at_layer.

Same model (SmolLM2-135M, offline), same tokens (BBC News, pre-tokenised), side by side in one run, with
SAELens's stock single-hook `ActivationsStore` (last routed hook) as a third contender. The store's
number includes everything a training run pays for data: the forward, stacking the L routed layers, special
token removal, the finiteness check and SAELens's mixing buffer.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/store_throughput.py
    python benchmarks/store_throughput.py --device cuda --model-path FOLDER --output store_throughput_gpu.json

Throughput does not depend on the weights, so on a machine where the 93 MB GGUF cannot travel `--model-path`
may be a SmolLM2-shaped Hugging Face folder with random weights (its config.json + tokenizer, see RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sae_lens import LanguageModelSAERunnerConfig
from sae_lens.config import LoggingConfig
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
from sae_lens.training.activations_store import ActivationsStore
from train_throughput import device_name, sync

from sae_lens_routing import RouteTrainingSAEConfig
from sae_lens_routing.offline.corpus import corpus_tokens
from sae_lens_routing.offline.local_model import load_local_model
from sae_lens_routing.training.store import MultiLayerActivationsStore

RESULTS = Path(__file__).parent / "results"


def steady_state_seconds(store: Any, n_tokens: int, device: str) -> float:
    """Seconds to draw n_tokens rows once the buffer is full (the first yield needs 2 forwards)."""
    next(store)
    sync(device)
    t = time.perf_counter()
    got = 0
    while got < n_tokens:
        got += len(next(store))
    sync(device)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per forward")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batches", type=int, default=12, help="forwards timed per contender")
    parser.add_argument("--repeats", type=int, default=3, help="alternate the two contenders this many times")
    parser.add_argument("--model-path", default="smollm2", help="'smollm2', a GGUF or a local HF folder")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output", default="store_throughput.json", help="file name under results/")
    args = parser.parse_args()
    model = load_local_model(args.model_path, device=args.device, dtype=args.dtype)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(3, 10)]  # the demo's routed layers
    stop = 10
    n = args.prompts * args.batches
    tokens = corpus_tokens(model, "bbcnews", n, args.context).to(args.device)
    dataset = Dataset.from_dict({"tokens": tokens.cpu().tolist()})
    per_forward = args.prompts * (args.context - 1)  # BOS removed by the store

    def runner_cfg(sae: Any, hook_name: str) -> LanguageModelSAERunnerConfig[Any]:
        return LanguageModelSAERunnerConfig(
            sae=sae,
            hook_name=hook_name,
            model_name="smollm2",
            dataset_path="",
            is_dataset_tokenized=True,
            context_size=args.context,
            streaming=False,
            training_tokens=10**9,
            train_batch_size_tokens=per_forward,
            store_batch_size_prompts=args.prompts,
            n_batches_in_buffer=2 * args.prompts,
            device=args.device,
            dtype=args.dtype,
            exclude_special_tokens=[model.tokenizer.bos_token_id],
            logger=LoggingConfig(log_to_wandb=False),
            verbose=False,
        )

    cfg = runner_cfg(
        RouteTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=1024, k=32, hook_names=hooks), hooks[-1]
    )
    stock_cfg = runner_cfg(TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=1024, k=32), hooks[-1])
    bare_times: list[float] = []
    store_times: list[float] = []
    stock_times: list[float] = []
    with torch.no_grad():
        model(tokens[: args.prompts], stop_at_layer=stop)  # warm-up
        for _ in range(args.repeats):
            sync(args.device)
            t = time.perf_counter()
            for b in range(args.batches):
                model(tokens[b * args.prompts : (b + 1) * args.prompts], stop_at_layer=stop)
            sync(args.device)
            bare_times.append(time.perf_counter() - t)
            routed = MultiLayerActivationsStore.from_route_config(model, cfg, override_dataset=dataset)
            store_times.append(steady_state_seconds(routed, args.batches * per_forward, args.device))
            stock = ActivationsStore.from_config(model, stock_cfg, override_dataset=dataset)
            stock_times.append(steady_state_seconds(stock, args.batches * per_forward, args.device))
    bare = args.batches * args.prompts * args.context / min(bare_times)
    store_tps = args.batches * per_forward / min(store_times)
    stock_tps = args.batches * per_forward / min(stock_times)
    result = {
        "device": device_name(args.device),
        "model": "SmolLM2-135M-Instruct" if args.model_path == "smollm2" else str(args.model_path),
        "dtype": args.dtype,
        "routed_hooks": hooks,
        "stop_at_layer": stop,
        "prompts_per_forward": args.prompts,
        "context_size": args.context,
        "bare_forward_tokens_per_s": bare,
        "store_tokens_per_s": store_tps,
        "ratio": store_tps / bare,
        "stock_single_hook_store_tokens_per_s": stock_tps,
        "stock_store_ratio": stock_tps / bare,
        "note": "store tokens exclude the BOS position it drops; bare counts every position; "
        "the stock store is "
        "SAELens's ActivationsStore on the last routed hook, same tokens and buffer",
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
