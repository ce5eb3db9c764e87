"""The model forward a RouteSAE run pays for: eager vs `torch.compile`, side by side in one run.

Three contenders on the same random-weight model and tokens (see train_throughput.py for the presets):
  eager          `model(tokens, stop_at_layer=last routed block + 1)` (what SAELens's store runs, hooks
  aside);
  compiled_model `torch.compile(model)` with the same call;
  routed         `compiled_resid_post_forward`: the compiled hook-free forward that a RouteSAE run's store
  uses
                 with `compile_llm: true`, returning all L routed layers stacked.

    python benchmarks/compiled_forward.py --preset paper --device cuda
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/compiled_forward.py --preset cpu
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from train_throughput import PRESETS, build_model, device_name, sync

from sae_lens_routing.training.compiled_forward import compiled_resid_post_forward

RESULTS = Path(__file__).parent / "results"


def tokens_per_s(fn: Callable[[], object], n_tokens: int, device: str, repeats: int) -> tuple[float, float]:
    """(tokens/s over `repeats` calls after two warm-ups, seconds of the first warm-up = compile time)."""
    with torch.no_grad():
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        first = time.perf_counter() - t
        fn()
        sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
    return repeats * n_tokens / (time.perf_counter() - t), first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    p = PRESETS[args.preset]
    fast = args.device.startswith("cuda")
    model = build_model(p, args.device, torch.bfloat16 if fast else torch.float32)
    hooks = [f"blocks.{i}.hook_resid_post" for i in p.routed_blocks]
    stop = p.routed_blocks[-1] + 1
    tokens = torch.randint(1, p.d_vocab, (p.prompts, p.context), device=args.device)
    compiled_model = torch.compile(model)
    routed = compiled_resid_post_forward(model, hooks)
    contenders = {
        "eager": lambda: model(tokens, stop_at_layer=stop),
        "compiled_model": lambda: compiled_model(tokens, stop_at_layer=stop),
        "routed": lambda: routed(tokens),
    }
    result: dict[str, object] = {
        "device": device_name(args.device),
        "preset": args.preset,
        "stop_at_layer": stop,
    }
    for name, fn in contenders.items():
        rate, first = tokens_per_s(fn, tokens.numel(), args.device, args.repeats)
        result[f"{name}_tokens_per_s"] = rate
        result[f"{name}_first_call_s"] = first
    # type: ignore[operator]
    result["routed_over_eager"] = result["routed_tokens_per_s"] / result["eager_tokens_per_s"]
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"compiled_forward_{args.preset}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
