"""`python -m sae_lens_routing upload --sae DIR REPO_ID [--sae-id ID]`: a RouteSAE and its model card."""

import argparse
import contextlib
import json
from pathlib import Path

HELP = "upload a saved RouteSAE folder to the Hugging Face Hub (SAELens layout + model card)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--sae", type=Path, required=True, help="folder written by save_inference_model / the SAELens runner")
    add("repo_id", help="Hub repo id, 'org/name' (created if missing)")
    add("--sae-id", help="folder in the repo (default: the --sae folder's name)")
    add("--revision", default="main", help="branch to upload to")
    add("--routing-shares", help="e.g. 0.2,0.5,0.3 in hook order (default: training_metrics.json's)")
    add("--metrics", help="a JSON object or .json file, replacing training_metrics.json's of the same name")
    add("--training-tokens", type=int, help="tokens trained on (default: runner_cfg.json's)")
    add("--root-card", choices=("auto", "yes", "no"), default="auto", help="also the repo's README.md (auto: "
        "when it has none)")
    add("--dry-run", action="store_true", help="check everything, print what would be uploaded, send nothing")


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.hub import upload_route_sae
    text, shares, metrics, problems = args.metrics, None, None, []
    try:
        shares = args.routing_shares and [float(x) for x in args.routing_shares.split(",")]
    except ValueError:
        problems.append(f"--routing-shares must be comma-separated numbers, got {args.routing_shares!r}")
    with contextlib.suppress(json.JSONDecodeError):
        is_file = text is not None and text.endswith(".json") and Path(text).is_file()
        metrics = text and json.loads(Path(text).read_text(encoding="utf-8") if is_file else text)
    if text is not None and not isinstance(metrics, dict):
        problems.append(f"--metrics must be a JSON object (name -> value) or a .json file, got {text!r}")
    if problems:
        raise ValueError("; ".join(problems))
    root_card = {"auto": None, "yes": True, "no": False}[args.root_card]
    paths = upload_route_sae(args.sae, args.repo_id, args.sae_id, revision=args.revision, metrics=metrics,
                             routing_shares=shares, training_tokens=args.training_tokens, root_card=root_card,
                             show_progress=True, dry_run=args.dry_run)
    if args.dry_run:
        print(f"would write the model card {args.sae / 'README.md'}")
    for p in paths:
        maybe = args.dry_run and p == "README.md" and root_card is None
        print(f"{'would upload' if args.dry_run else 'uploaded'} {args.repo_id}/{p}"
              f"{' (if the repo has no README.md yet)' if maybe else ''}")
    return 0
