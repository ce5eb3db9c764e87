"""Arguments and loading shared by the analysis commands (evaluate, steer, dashboard...)."""

from __future__ import annotations

import argparse
import warnings
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """`--config run.yaml` and repeatable `--set key=value`, as `train` and `cache-activations` read them."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)"
    )


def positive_int(text: str) -> int:
    """argparse `type=` for counts and sizes: argparse's refusal then names the flag ("argument --batch-size:
    expected a positive integer, got 0") instead of a 0 or a negative reaching an empty loop or a slice."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_sae_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sae",
        required=True,
        help="a saved RouteSAE folder (cfg.json + sae_weights.safetensors), a named release or a Hub repo id",
    )
    parser.add_argument("--sae-id", help="the SAE inside the release or Hub repo (or a subfolder of --sae)")
    parser.add_argument(
        "--model-path", help="local GGUF / HF folder / 'smollm2'; default: the model the SAE was trained on"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the SAE and the model")


def load_sae_and_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """The SAE, then its model loaded as it was trained: a local model unprocessed, a `model_name` one with the
    SAE's `model_from_pretrained_kwargs` (so SAELens's advice to load it that way, warned on every SAE load,
    is followed here and silenced)."""
    from sae_lens_routing.loading.releases import load_route_sae  # checks the files, names what is wrong

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs")
        sae = load_route_sae(args.sae, args.sae_id, device=args.device)
    if sae.cfg.architecture() != "routesae":
        raise ValueError(f"--sae must be a RouteSAE, got architecture {sae.cfg.architecture()!r}")
    model_path = args.model_path or sae.cfg.metadata.model_path
    if model_path:
        from sae_lens_routing.offline.local_model import load_local_model

        model = load_local_model(model_path, device=args.device)
    else:
        from sae_lens.load_model import load_model

        model = load_model(
            sae.cfg.metadata.model_class_name or "HookedTransformer",
            sae.cfg.metadata.model_name,
            device=args.device,
            model_from_pretrained_kwargs=sae.cfg.metadata.model_from_pretrained_kwargs,
        )
    return sae, model
