"""`python -m sae_lens_routing dashboard --sae PATH [--features top:24] --out report.html [--screenshot report.png]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sae_lens_routing.cli.commands._common import add_sae_and_model_arguments, load_sae_and_model

if TYPE_CHECKING:
    from sae_lens_routing.dashboard.report import DashboardData

HELP = "Write sae-dashboard's feature-centric HTML (offline, with a routing panel) for RouteSAE features."


def positive_int(text: str) -> int:
    """argparse type: names the flag in its error (argparse prefixes 'argument --flag:')."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    add_sae_and_model_arguments(parser)
    parser.add_argument(
        "--features",
        default="top:24",
        help="top:N (the N most active latents that fill the page with activating examples) or 0-63, 1,5,9",
    )
    parser.add_argument("--corpus", default="bbcnews", help="offline corpus the activations are drawn from")
    parser.add_argument("--n-sequences", type=positive_int, default=64, help="corpus sequences to scan")
    parser.add_argument("--context-size", type=positive_int, default=128, help="tokens per sequence")
    parser.add_argument(
        "--interpretability",
        help="an interpretability.json (from `interpret`): show the judge's explanations",
    )


def read_interpretability(args: argparse.Namespace) -> dict | None:
    from sae_lens_routing.interpret.results import read_result

    return read_result(args.interpretability) if args.interpretability else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dashboard_arguments(parser)
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--screenshot", help="also write a PNG of the page (headless Chromium)")
    parser.add_argument(
        "--neuronpedia", help="also write the Neuronpedia batch JSON here (from the same data)"
    )


def compute(args: argparse.Namespace) -> DashboardData:
    """The dashboard data of the command line's SAE, tokens and features (computed once per command)."""
    from sae_lens_routing.dashboard.report import dashboard_data
    from sae_lens_routing.offline.corpus import corpus_tokens

    sae, model = load_sae_and_model(args)
    tokens = corpus_tokens(model, args.corpus, args.n_sequences, args.context_size)
    return dashboard_data(sae, model, tokens, args.features)


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.atomic import atomic_write_json
    from sae_lens_routing.dashboard.neuronpedia import neuronpedia_batch
    from sae_lens_routing.dashboard.report import write_dashboard_html

    outputs = [(f, getattr(args, f.lstrip("-"))) for f in ("--out", "--screenshot", "--neuronpedia")]
    named = [(f, Path(p).resolve()) for f, p in outputs if p]
    same = [f"{a} and {b}" for i, (a, pa) in enumerate(named) for b, pb in named[i + 1 :] if pa == pb]
    if same:
        raise ValueError(f"{same[0]} name the same file; give each output its own path")
    interpretability = read_interpretability(args)
    data = compute(args)
    html = write_dashboard_html(data, args.out, interpretability)
    print(f"dashboard written to {html} ({data.summary()})")
    if args.screenshot:
        from sae_lens_routing.dashboard.browser import screenshot

        print(f"screenshot written to {screenshot(args.out, args.screenshot)}")
    if args.neuronpedia:
        batch = neuronpedia_batch(data, interpretability=interpretability)
        atomic_write_json(Path(args.neuronpedia), batch)
        print(f"Neuronpedia batch written to {args.neuronpedia}")
    return 0
