"""Argument types and loading shared by the commands: a bad value is refused by argparse, naming the flag."""

import argparse
import math
import warnings
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import torch
from sae_lens.load_model import load_model

from sae_lens_routing.loading.releases import load_route_sae
from sae_lens_routing.offline import local_model
from sae_lens_routing.offline.local_model import is_bridge_class, load_bridge


def checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse `type=`: `convert`, then refuse what fails it or `ok` ("argument --flag: must be ...")."""

    def parse(text: str) -> Any:
        with suppress(ValueError, RuntimeError):
            if ok(value := convert(text)):
                return value
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")

    return parse


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
finite_float = checked(float, math.isfinite, "a finite number")
device = checked(lambda t: str(torch.device(t)), lambda d: "cuda" not in d or torch.cuda.is_available(),
                 "a torch device this machine has ('cpu', 'cuda:1')")


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")


def add_sae_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sae", required=True, help="a RouteSAE folder, release or Hub repo id")
    parser.add_argument("--sae-id", help="the SAE inside the release or Hub repo (or a subfolder of --sae)")
    parser.add_argument("--model-path", help="GGUF / HF folder / 'smollm2'; default: the SAE's own model")
    parser.add_argument("--device", type=device, default="cpu", help="torch device for the SAE and the model")


def load_sae_and_model(args: argparse.Namespace, with_model: bool = True) -> tuple[Any, Any]:
    """The SAE, then its model loaded as it was trained (so SAELens's kwargs warning is moot)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs")
        sae = load_route_sae(args.sae, args.sae_id, device=args.device)
    if sae.cfg.architecture() != "routesae":
        raise ValueError(f"--sae must be a RouteSAE, got architecture {sae.cfg.architecture()!r}")
    if not with_model:
        return sae, None
    meta, model, model_path = sae.cfg.metadata, None, args.model_path or sae.cfg.metadata.model_path
    if is_bridge_class(meta.model_class_name):
        model = load_bridge(meta.model_name, model_path, device=args.device)
    elif model_path:  # looked up at call time, so it can be replaced
        model = local_model.load_local_model(model_path, device=args.device)
    elif meta.model_name:  # TransformerLens's error lists every official name: say what to pass instead
        kwargs = {"device": args.device, "model_from_pretrained_kwargs": meta.model_from_pretrained_kwargs}
        with suppress(ValueError, OSError):
            model = load_model("HookedTransformer", meta.model_name, **kwargs)
    if model is None or sae.cfg.d_in != model.cfg.d_model:
        raise ValueError(f"the SAE records no model_path and its model_name {meta.model_name!r} cannot be "
                         "loaded here; pass --model-path (a GGUF file, a Hugging Face folder or 'smollm2')"
                         if model is None else f"--sae has d_in={sae.cfg.d_in} but the model has d_model="
                         f"{model.cfg.d_model}: pass the --model-path it was trained on")
    return sae, model
