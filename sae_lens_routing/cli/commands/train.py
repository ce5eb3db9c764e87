"""`python -m sae_lens_routing train --config run.yaml [--set sae.k=32 ...]`; torchrun and `sweep:` too."""

import argparse
from pathlib import Path

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands._common import add_config_arguments
from sae_lens_routing.training.run_config import parse_run_config, read_config, train_from_config
from sae_lens_routing.training.runner import format_summary
from sae_lens_routing.training.trainer import dist_info
from sae_lens_routing.training.validation import refuse

HELP = "Train a RouteSAE from a YAML SAELens runner config (with an `sae:` section)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML: LanguageModelSAERunnerConfig fields + `sae:` section")
    parser.add_argument("--summary-json", help="also write the final summary to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_path")


def run(args: argparse.Namespace) -> int:
    out = args.summary_json
    refuse([out and Path(out).is_dir() and f"--summary-json {out!r} is a folder; give a file path"])
    data = read_config(args.config, args.set)
    if "sweep" in data:
        from sae_lens_routing.training.sweep import train_sweep_from_config
        _, summary = train_sweep_from_config(data, overwrite=args.overwrite)
        print("\n".join(f"[{name}]\n{format_summary(s)}" for name, s in summary.items()))
    else:  # the runner prints the summary
        cfg = parse_run_config(data)
        refuse([cfg.runner.output_path is None and "output_path is null, so `train` would keep nothing: "
                "give it a folder (e.g. output_path: out/sae)"])
        _, summary = train_from_config(cfg, overwrite=args.overwrite)
    if out and dist_info().is_main:
        atomic_write_json(out, summary, indent=2)
    return 0
