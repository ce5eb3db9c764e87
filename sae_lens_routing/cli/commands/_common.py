"""Arguments and loading shared by the analysis commands (evaluate, steer, dashboard...)."""

from __future__ import annotations

import argparse
import math
import warnings
from typing import Any

from sae_lens_routing.offline.local_model import is_bridge_class


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


def finite_float(text: str) -> float:
    """argparse `type=` for thresholds and temperatures: a NaN or Inf is refused, naming the flag."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def device(text: str) -> str:
    """argparse `type=` for --device: an unknown or absent device is refused before anything loads."""
    from sae_lens_routing.training.validation import check_device

    try:
        check_device("--device", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


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
    parser.add_argument("--device", type=device, default="cpu", help="torch device for the SAE and the model")


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
    if is_bridge_class(sae.cfg.metadata.model_class_name):
        from sae_lens_routing.offline.local_model import load_bridge

        model = load_bridge(sae.cfg.metadata.model_name, model_path, device=args.device)
    elif model_path:
        from sae_lens_routing.offline.local_model import load_local_model

        model = load_local_model(model_path, device=args.device)
    else:
        from sae_lens.load_model import load_model

        name = sae.cfg.metadata.model_name
        try:
            if not name:
                raise ValueError("no model_name")
            model = load_model(
                "HookedTransformer",
                name,
                device=args.device,
                model_from_pretrained_kwargs=sae.cfg.metadata.model_from_pretrained_kwargs,
            )
        except (ValueError, OSError) as e:  # TransformerLens lists every official name; say what to pass
            raise ValueError(
                f"the SAE records no model_path and its model_name {name!r} cannot be loaded here ({type(e).__name__}); "
                "pass --model-path (a GGUF file, a Hugging Face folder or 'smollm2')"
            ) from None
    d_model = getattr(getattr(model, "cfg", None), "d_model", None)
    if d_model is not None and sae.cfg.d_in != d_model:
        raise ValueError(
            f"--sae has d_in={sae.cfg.d_in} but the model has d_model={d_model}: it was trained on another model; "
            "pass the --model-path it was trained on"
        )
    return sae, model
