"""`python -m sae_lens_routing dashboard --sae PATH [--features top:24] --out a.html [--screenshot a.png]`."""

import argparse
from pathlib import Path
from typing import Any

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands import _common
from sae_lens_routing.dashboard import report
from sae_lens_routing.interpret.results import read_result
from sae_lens_routing.offline.corpus import corpus_tokens

HELP = "Write sae-dashboard's feature-centric HTML (offline, with a routing panel) for RouteSAE features."


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_sae_and_model_arguments(parser)
    features = "top:N (the N most active latents that fill the page with activating examples) or 0-63, 1,5,9"
    parser.add_argument("--features", default="top:24", help=features)
    parser.add_argument("--corpus", default="bbcnews", help="offline corpus the activations are drawn from")
    parser.add_argument("--n-sequences", type=_common.positive_int, default=64, help="sequences to scan")
    parser.add_argument("--context-size", type=_common.positive_int, default=128, help="tokens per sequence")
    parser.add_argument("--interpretability", help="show the judge's explanations (`interpret`'s JSON)")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dashboard_arguments(parser)
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--screenshot", help="also write a PNG of the page (headless Chromium)")
    parser.add_argument("--neuronpedia", help="also write the Neuronpedia batch JSON here (same data)")


def compute(args: argparse.Namespace) -> tuple[report.DashboardData, dict[str, Any] | None]:
    judged = read_result(args.interpretability) if args.interpretability else None
    sae, model = _common.load_sae_and_model(args)
    if judged is not None and judged.get("hook_names") != list(sae.cfg.hook_names):
        raise ValueError(f"--interpretability was made for an SAE on {judged.get('hook_names')}, not this "
                         f"SAE's {list(sae.cfg.hook_names)}: run `interpret` on this SAE")
    tokens = corpus_tokens(model, args.corpus, args.n_sequences, args.context_size)
    return report.dashboard_data(sae, model, tokens, args.features), judged


def check_output_files(args: argparse.Namespace, *flags: str) -> None:
    """Each output a file path of its own, new or (with --overwrite) replaced: refused before any work."""
    named = [(f"--{f}", Path(getattr(args, f)).resolve()) for f in flags if getattr(args, f)]
    same = [f"{a} and {b} name the same file; give each output its own path"
            for i, (a, pa) in enumerate(named) for b, pb in named[i + 1 :] if pa == pb]
    taken = [f"{flag}={str(path)!r} is " + ("a folder; give a file path" if path.is_dir() else
             "an existing file; pass --overwrite") + " (or choose another path)"
             for flag, path in named if path.is_dir() or (path.exists() and not args.overwrite)]
    if same or taken:
        raise (ValueError if same else FileExistsError)((same + taken)[0])


def run(args: argparse.Namespace) -> int:
    check_output_files(args, "out", "screenshot", "neuronpedia")
    data, judged = compute(args)
    print(f"dashboard written to {report.write_dashboard_html(data, args.out, judged)} ({data.summary()})")
    if args.screenshot:
        print(f"screenshot written to {report.screenshot(args.out, args.screenshot)}")
    if args.neuronpedia:
        atomic_write_json(Path(args.neuronpedia), report.neuronpedia_batch(data, interpretability=judged))
        print(f"Neuronpedia batch written to {args.neuronpedia}")
    return 0
