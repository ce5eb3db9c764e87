"""`python -m sae_lens_routing steer --sae PATH --prompt "..." --feature 123=8 [--mode multiply]`."""

from __future__ import annotations

import argparse
import math

from sae_lens_routing.analysis.splice import steer
from sae_lens_routing.cli.commands._common import (
    add_sae_and_model_arguments,
    finite_float,
    load_sae_and_model,
    positive_int,
)

HELP = "Generate with chosen RouteSAE features added/multiplied at their routed layers; print both continuations."


def parse_feature(text: str) -> tuple[int, float]:
    """INDEX=VALUE with INDEX a latent (>= 0; the upper bound d_sae is checked once the SAE is loaded) and
    VALUE finite: a NaN or Inf would make every steered activation NaN and the continuation garbage."""
    index, _, value = text.partition("=")
    try:
        parsed = int(index), float(value)
    except ValueError:
        parsed = (-1, 0.0)
    if parsed[0] < 0 or not math.isfinite(parsed[1]):
        raise argparse.ArgumentTypeError(
            f"expects INDEX=VALUE with INDEX a latent index >= 0 and VALUE a finite number, got {text!r}"
        )
    return parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sae_and_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument(
        "--feature",
        type=parse_feature,
        action="append",
        required=True,
        metavar="INDEX=VALUE",
        help="a latent and the value to add or multiply by (repeatable)",
    )
    parser.add_argument(
        "--mode",
        choices=["add", "multiply"],
        default="add",
        help="add VALUE to the latent, or multiply it (a latent that never fires cannot be multiplied)",
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=20, help="tokens to generate")
    parser.add_argument("--temperature", type=finite_float, default=0.0, help="sampling temperature; 0: greedy")


def run(args: argparse.Namespace) -> int:
    sae, model = load_sae_and_model(args)
    out_of_range = [i for i, _ in args.feature if i >= sae.cfg.d_sae]
    if out_of_range:
        raise ValueError(
            f"--feature index {out_of_range} out of range: this SAE has d_sae={sae.cfg.d_sae} latents"
        )
    result = steer(
        model,
        sae,
        args.prompt,
        dict(args.feature),
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
    )
    print(f"prompt:     {result.prompt!r}")
    print(f"unsteered:  {result.unsteered!r}")
    print(f"steered:    {result.steered!r}  ({args.mode} {dict(args.feature)})")
    return 0
