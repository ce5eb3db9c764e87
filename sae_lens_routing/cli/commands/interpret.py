"""`python -m sae_lens_routing interpret --sae DIR --out DIR --judge-url URL --judge-model NAME [...]`."""

import argparse

from sae_lens_routing.atomic import claim_folder
from sae_lens_routing.cli.commands._common import checked, load_sae_and_model, positive_int

HELP = "Ask an LLM judge whether sampled RouteSAE features are interpretable (paper rubric, detection)."
OUTPUTS = ("interpretability.json", "interpretability.png", "interpret_contexts.json", "judge_cache")
N_SEQUENCES, CONTEXT_SIZE = 128, 128  # the corpus tokens the contexts are computed on (bbcnews)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--sae", required=True, help="a saved RouteSAE folder, a named release or a Hub repo id")
    add("--out", required=True, help="folder for interpretability.json/.png and the judge cache")
    add("--contexts", help="this command's interpret_contexts.json or evaluate's feature_contexts.json")
    add("--judge-url", required=True, help="https://api.openai.com/v1, "
        "https://RESOURCE.openai.azure.com/?api-version=V, or a local server's /v1")
    add("--judge-model", required=True, help="the judge model (Azure: the deployment name)")
    add("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    seconds = checked(float, lambda v: 0 < v < 3600, "a number of seconds in (0, 3600)")
    add("--judge-timeout", type=seconds, default=30.0, help="seconds per request; openai retries it 3 times")
    add("--n-features", type=positive_int, default=100, help="features sampled (paper: 100)")
    add("--protocol", choices=["paper", "detection", "both"], default="paper",
        help="paper: the official rubric (1 request per feature); detection: explain + held-out verdicts (2)")
    add("--seed", type=int, default=0, help="feature sampling, shuffles and the judge's seed")
    add("--dry-run", action="store_true", help="print one prompt and the request count; send nothing")
    parser.set_defaults(sae_id=None, model_path=None, device="cpu")  # for load_sae_and_model


def run(args: argparse.Namespace) -> int:
    from sae_lens_routing.interpret import JudgeConfig, interpret_features
    from sae_lens_routing.offline.corpus import corpus_tokens
    judge = JudgeConfig(args.judge_url, args.judge_model, args.api_key_env, timeout_s=args.judge_timeout,
                        seed=args.seed)
    if not args.dry_run:  # refused before the model loads; a dry run writes nothing, so protects nothing
        claim_folder(args.out, OUTPUTS, create=False)
    # Given contexts, the SAE only names the routed layers; else one routed pass over the corpus, on its model
    sae, model = load_sae_and_model(args, with_model=args.contexts is None)
    tokens = None if model is None else corpus_tokens(model, "bbcnews", N_SEQUENCES, CONTEXT_SIZE)
    if not args.dry_run:
        claim_folder(args.out, OUTPUTS)
    interpret_features(sae, model, judge=judge, out=args.out, tokens=tokens, contexts=args.contexts,
                       n_features=args.n_features, protocol=args.protocol, seed=args.seed,
                       dry_run=args.dry_run)
    return 0
