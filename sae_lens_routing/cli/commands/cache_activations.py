"""`python -m sae_lens_routing cache-activations --config run.yaml [--out PATH] [--tokens N]`.

Runs the model once over the run's corpus and writes the routed layers to disk (see `activation_cache.py`);
the same YAML with `use_cached_activations: true` then trains from it with `train`, as often as wanted.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from sae_lens_routing.training.run_config import (
    apply_overrides,
    build_runner_config,
    load_model_and_dataset,
    read_yaml_config,
    split_config,
)

HELP = (
    "Cache the routed layers of a model over a corpus once, to train RouteSAEs from (use_cached_activations)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="the training run's YAML (model, corpus, sae hooks...)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)"
    )
    parser.add_argument("--out", help="cache folder (default: the config's cached_activations_path)")
    parser.add_argument(
        "--tokens",
        type=int,
        help="non-special tokens to cache (default: training_tokens plus the held-out evaluation sequences)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cache at the path")


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.training.activation_cache import cache_routed_activations

    if args.tokens is not None and args.tokens < 1:
        raise SystemExit(f"--tokens must be a positive integer, got {args.tokens}")
    data = apply_overrides(read_yaml_config(args.config), args.set)
    fields, extras = split_config(data)
    fields["sae"] = dict(fields["sae"])
    fields["use_cached_activations"] = False  # this command writes the cache; it does not read one
    out = args.out or fields.get("cached_activations_path")
    if not out:
        raise SystemExit("give --out PATH or set cached_activations_path in the config")
    model, dataset = load_model_and_dataset(fields, extras)
    cfg = build_runner_config(fields, model)
    meta = cache_routed_activations(
        model,
        cfg,
        out,
        override_dataset=dataset,
        n_tokens=args.tokens,
        model_path=str(extras["model_path"]) if "model_path" in extras else None,
        overwrite=args.overwrite,
    )
    info = {k: v for k, v in asdict(meta).items() if k not in ("special_token_ids", "files")}
    print(f"cached {meta.n_kept_tokens} tokens ({meta.bytes_per_token} bytes/token) to {out}")
    print(json.dumps(info, indent=2))
    return 0
