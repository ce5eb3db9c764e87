"""`python -m sae_lens_routing neuronpedia --sae PATH --features 0-63 --out batch.json`."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands._common import load_sae_and_model
from sae_lens_routing.cli.commands.dashboard import add_dashboard_arguments

HELP = "Export RouteSAE features as a Neuronpedia batch JSON (sae-dashboard's layout + routing fields)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dashboard_arguments(parser)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--sae-set", default="routesae", help="Neuronpedia SAE set name")


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.dashboard.neuronpedia import neuronpedia_batch
    from sae_lens_routing.dashboard.report import routed_dashboard
    from sae_lens_routing.offline.corpus import corpus_tokens

    sae, model = load_sae_and_model(args)
    tokens = corpus_tokens(model, args.corpus, args.n_sequences, args.context_size)
    with tempfile.TemporaryDirectory() as tmp:
        result = routed_dashboard(sae, model, tokens, args.features, Path(tmp) / "vis.html", offline=False)
    batch = neuronpedia_batch(model, sae, result["vis_data"], result["routing"], sae_set=args.sae_set)
    atomic_write_json(args.out, batch)
    print(f"Neuronpedia batch with {len(batch['features'])} features written to {args.out}")
    return 0
