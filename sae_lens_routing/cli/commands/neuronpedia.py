"""`python -m sae_lens_routing neuronpedia --sae PATH [--features top:24] --out batch.json`."""

import argparse

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands.dashboard import add_dashboard_arguments, check_output_files, compute
from sae_lens_routing.dashboard.report import neuronpedia_batch

HELP = "Export RouteSAE features as a Neuronpedia batch JSON (sae-dashboard's layout + routing fields)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dashboard_arguments(parser)
    parser.add_argument("--out", required=True, help="the JSON file to write")


def run(args: argparse.Namespace) -> int:
    check_output_files(args, "out")
    data, judged = compute(args)
    batch = neuronpedia_batch(data, interpretability=judged)
    atomic_write_json(args.out, batch)
    print(f"Neuronpedia batch with {len(batch['features'])} features written to {args.out}")
    return 0
