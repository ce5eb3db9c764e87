"""`python -m sae_lens_routing dashboard --sae PATH --features 0-63 --out report.html [--screenshot report.png]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sae_lens_routing.cli.commands._common import add_sae_and_model_arguments, load_sae_and_model

HELP = "Write sae-dashboard's feature-centric HTML (offline, with a routing panel) for RouteSAE features."


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    add_sae_and_model_arguments(parser)
    parser.add_argument("--features", required=True, help="e.g. 0-63 or 1,5,9")
    parser.add_argument("--corpus", default="bbcnews", help="offline corpus the activations are drawn from")
    parser.add_argument("--n-sequences", type=int, default=64)
    parser.add_argument("--context-size", type=int, default=128)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dashboard_arguments(parser)
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--screenshot", help="also write a PNG of the page (headless Chromium)")
    parser.add_argument("--neuronpedia", help="also write the Neuronpedia batch JSON here")


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.dashboard.report import routed_dashboard
    from sae_lens_routing.offline.corpus import corpus_tokens

    sae, model = load_sae_and_model(args)
    tokens = corpus_tokens(model, args.corpus, args.n_sequences, args.context_size)
    result = routed_dashboard(sae, model, tokens, args.features, args.out)
    print(f"dashboard written to {result['path']}")
    if args.screenshot:
        from sae_lens_routing.dashboard.browser import screenshot

        print(f"screenshot written to {screenshot(args.out, args.screenshot)}")
    if args.neuronpedia:
        from sae_lens_routing.atomic import atomic_write_json
        from sae_lens_routing.dashboard.neuronpedia import neuronpedia_batch

        batch = neuronpedia_batch(model, sae, result["vis_data"], result["routing"])
        atomic_write_json(Path(args.neuronpedia), batch)
        print(f"Neuronpedia batch written to {args.neuronpedia}")
    return 0
