"""`python -m sae_lens_routing steer --sae PATH --prompt "..." --feature 123=8 [--mode multiply]`."""

from __future__ import annotations

import argparse

from sae_lens_routing.analysis.steering import steer
from sae_lens_routing.cli.commands._common import add_sae_and_model_arguments, load_sae_and_model

HELP = "Generate with chosen RouteSAE features added/multiplied at their routed layers; print both continuations."


def parse_feature(text: str) -> tuple[int, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--feature expects INDEX=VALUE, got {text!r}")
    index, value = text.split("=", 1)
    return int(index), float(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sae_and_model_arguments(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--feature", type=parse_feature, action="append", required=True, metavar="INDEX=VALUE"
    )
    parser.add_argument("--mode", choices=["add", "multiply"], default="add")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.0)


def run(args: argparse.Namespace) -> int:
    sae, model = load_sae_and_model(args)
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
