"""`python -m sae_lens_routing train --config run.yaml [--set sae.k=32 ...]` (works under torchrun too).

A `sweep:` list in the YAML trains one RouteSAE per variant from one model forward per batch
(`training/sweep.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands._common import add_config_arguments
from sae_lens_routing.training.distributed import dist_info
from sae_lens_routing.training.run_config import parse_run_config, read_config, train_from_config
from sae_lens_routing.training.runner import format_summary

HELP = "Train a RouteSAE from a YAML SAELens runner config (with an `sae:` section)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML: LanguageModelSAERunnerConfig fields + `sae:` section")
    parser.add_argument("--summary-json", help="also write the final summary to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_path")


def run(args: argparse.Namespace) -> int:
    if args.summary_json and Path(args.summary_json).is_dir():  # known now, not after training
        raise ValueError(f"--summary-json {args.summary_json!r} is a folder; give a file path such as summary.json")
    data = read_config(args.config, args.set)
    if "sweep" in data:  # several RouteSAEs from one model forward per batch
        from sae_lens_routing.training.sweep import train_sweep_from_config

        _, summaries = train_sweep_from_config(data, overwrite=args.overwrite)
        print("\n".join(f"[{name}]\n{format_summary(s)}" for name, s in summaries.items()))
        if args.summary_json:
            atomic_write_json(args.summary_json, summaries, indent=2)
        return 0
    _, summary = train_from_config(parse_run_config(data), overwrite=args.overwrite)
    if dist_info().is_main:  # the runner printed the summary
        if args.summary_json:
            atomic_write_json(args.summary_json, summary, indent=2)
    return 0
