"""`python -m sae_lens_routing steer --sae PATH --prompt "..." --feature 123=8 [--mode multiply]`."""

import argparse
import math

from sae_lens_routing.analysis.splice import steer
from sae_lens_routing.cli.commands import _common

MAX_PROMPT_TOKENS = 512  # generation reruns the whole prompt for each new token (no KV cache): minutes above
HELP = "Generate with RouteSAE features added/multiplied at their routed layers; print both continuations."

parse_feature = _common.checked(lambda t: (int(t.partition("=")[0]), float(t.partition("=")[2])),
                                lambda v: v[0] >= 0 and math.isfinite(v[1]),
                                "INDEX=VALUE with INDEX a latent index >= 0 and VALUE a finite number")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_sae_and_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="the text to continue")
    feature = {"type": parse_feature, "action": "append", "metavar": "INDEX=VALUE", "required": True}
    parser.add_argument("--feature", **feature, help="a latent and the value to add to or multiply it by")
    mode = "add VALUE to the latent, or multiply it (a latent that never fires cannot be multiplied)"
    parser.add_argument("--mode", choices=["add", "multiply"], default="add", help=mode)
    parser.add_argument("--max-new-tokens", type=_common.positive_int, default=20, help="tokens to generate")
    temperature = _common.checked(float, lambda v: 0 <= v < math.inf, "a finite number >= 0 (0: greedy)")
    parser.add_argument("--temperature", type=temperature, default=0.0, help="0: greedy")


def run(args: argparse.Namespace) -> int:
    features = dict(args.feature)
    if len(features) < len(args.feature):  # refused before anything loads
        twice = sorted({i for i, _ in args.feature if [j for j, _ in args.feature].count(i) > 1})
        raise ValueError(f"--feature gives latent {twice} more than once; give each latent one value")
    sae, model = _common.load_sae_and_model(args)
    out_of_range = [i for i in features if i >= sae.cfg.d_sae]
    limit = min(MAX_PROMPT_TOKENS, int(model.cfg.n_ctx))  # the model's context, if shorter
    if out_of_range or (n := model.to_tokens(args.prompt, truncate=False).shape[-1]) > limit:
        raise ValueError(
            f"--feature index {out_of_range} out of range: this SAE has d_sae={sae.cfg.d_sae}" if out_of_range
            else f"--prompt is {n} tokens; steer takes at most {limit} (the model's context or "
            f"{MAX_PROMPT_TOKENS}: it reruns the whole prompt for every new token): shorten it")
    options = {"mode": args.mode, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    result = steer(model, sae, args.prompt, features, **options)
    print(f"prompt:     {result.prompt!r}\nunsteered:  {result.unsteered!r}")
    print(f"steered:    {result.steered!r}  ({args.mode} {features})")
    return 0
