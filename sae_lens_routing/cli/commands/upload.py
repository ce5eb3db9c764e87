"""`python -m sae_lens_routing upload --sae DIR REPO_ID [--sae-id ID]`: publish a routed SAE folder with a model
card (the run's metrics and routing shares come from the folder's training_metrics.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "upload a saved RouteSAE folder to the Hugging Face Hub (SAELens layout + model card)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sae", type=Path, required=True, help="folder written by save_inference_model / the SAELens runner"
    )
    parser.add_argument("repo_id", help="Hub repo id, 'org/name' (created if missing)")
    parser.add_argument("--sae-id", default=None, help="folder in the repo (default: the --sae folder's name)")
    parser.add_argument("--revision", default="main", help="branch to upload to")
    parser.add_argument(
        "--routing-shares",
        default=None,
        help="share of tokens routed to each hook, comma-separated in hook order (e.g. 0.2,0.5,0.3); "
        "default: those in the folder's training_metrics.json",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="metrics for the card, a JSON object or a .json file (default: the folder's training_metrics.json; "
        "given ones replace those of the same name)",
    )
    parser.add_argument(
        "--training-tokens", type=int, default=None, help="tokens trained on (default: runner_cfg.json)"
    )
    parser.add_argument(
        "--root-card",
        choices=("auto", "yes", "no"),
        default="auto",
        help="also make the card the repo's README.md (auto: only when the repo has none)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the folder and its model card, print what would be uploaded; write and send nothing",
    )


def _parse_shares(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as e:
        raise ValueError(f"--routing-shares must be comma-separated numbers, got {text!r}") from e


def _parse_metrics(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    raw = Path(text).read_text(encoding="utf-8") if text.endswith(".json") and Path(text).is_file() else text
    try:
        metrics = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"--metrics must be a JSON object or a .json file, got {text!r}") from e
    if not isinstance(metrics, dict):
        raise ValueError(f"--metrics must be a JSON object (name -> value), got {type(metrics).__name__}")
    return metrics


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.hub.upload import upload_route_sae

    root_card = {"auto": None, "yes": True, "no": False}[args.root_card]
    paths = upload_route_sae(
        args.sae,
        args.repo_id,
        args.sae_id,
        revision=args.revision,
        routing_shares=_parse_shares(args.routing_shares),
        metrics=_parse_metrics(args.metrics),
        training_tokens=args.training_tokens,
        root_card=root_card,
        show_progress=True,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(f"would write the model card {args.sae / 'README.md'}")
    verb = "would upload" if args.dry_run else "uploaded"
    for p in paths:
        maybe = args.dry_run and p == "README.md" and root_card is None
        print(f"{verb} {args.repo_id}/{p}{' (if the repo has no README.md yet)' if maybe else ''}")
    return 0
