"""`cache-activations --config run.yaml`: routed layers cached once, to train from."""

import argparse
import json
from dataclasses import asdict

from sae_lens_routing.atomic import check_replaceable
from sae_lens_routing.cli.commands._common import add_config_arguments, positive_int
from sae_lens_routing.training.run_config import load_model_and_dataset, parse_run_config, read_config
from sae_lens_routing.training.validation import refuse

HELP = "Cache the routed layers of a model over a corpus once, to train RouteSAEs from."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "the training run's YAML (model, corpus, sae hooks...)")
    parser.add_argument("--out", help="cache folder (default: the config's cached_activations_path)")
    parser.add_argument("--tokens", type=positive_int, help="non-special tokens to cache (default: "
                        "training_tokens plus the held-out evaluation sequences)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cache at the path")


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.training.activation_cache import cache_routed_activations
    # This command writes the cache; it reads none. A sweep's variants share one stream: its base config.
    data = {k: v for k, v in read_config(args.config, args.set).items() if k != "sweep"}
    out = args.out or data.get("cached_activations_path")
    refuse([not out and "give --out PATH or set cached_activations_path in the config"])
    run = parse_run_config({**data, "use_cached_activations": False, "cached_activations_path": str(out)})
    check_replaceable(out, "--out", args.overwrite)  # before the model loads
    model, dataset = load_model_and_dataset(run)
    meta = cache_routed_activations(model, run.runner, out, override_dataset=dataset, n_tokens=args.tokens,
                                    model_path=run.model_path, overwrite=args.overwrite)
    info = {k: v for k, v in asdict(meta).items() if k not in ("special_token_ids", "files")}
    print(f"cached {meta.n_kept_tokens} tokens ({meta.bytes_per_token} bytes/token) to {out}")
    print(json.dumps(info, indent=2))
    return 0
