"""`python -m sae_lens_routing evaluate --sae PATH --out DIR`: eval.json, routing chart, feature contexts."""

import argparse
from pathlib import Path
from typing import Any

from sae_lens_routing.analysis.evals import run_route_evals, write_routing_chart
from sae_lens_routing.analysis.feature_contexts import ContextRules, FeatureContextCollector
from sae_lens_routing.atomic import atomic_write_json, claim_folder
from sae_lens_routing.cli.commands import _common
from sae_lens_routing.offline.corpus import corpus_tokens

OUTPUTS = ("eval.json", "routing_share.png", "feature_contexts.json")
HELP = "Evaluate a RouteSAE (NormMSE, FVU, L0, CE recovered, KL, routing share) and count its features."
SHOWN = """reconstruction_quality/normalized_mse reconstruction_quality/explained_variance sparsity/l0
sparsity/latents_silent_on_eval model_performance_preservation/ce_loss_score features/n_counted
model_performance_preservation/delta_ce model_behavior_preservation/kl_div_with_sae features/threshold
model_behavior_preservation/kl_div_with_sae_official_batchmean features/tokens_read""".split()  # printed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_sae_and_model_arguments(parser)
    parser.add_argument("--out", required=True, help="folder for eval.json, routing chart, feature contexts")
    parser.add_argument("--corpus", default="bbcnews", help="offline corpus (its held-out documents)")
    parser.add_argument("--n-sequences", type=_common.positive_int, default=64, help="held-out sequences")
    parser.add_argument("--context-size", type=_common.positive_int, default=128, help="tokens per sequence")
    parser.add_argument("--batch-size", type=_common.positive_int, default=4, help="sequences per batch")
    threshold = "feature-context threshold (default: the paper's 15 scaled by sqrt(d_in / 2048))"
    parser.add_argument("--threshold", type=_common.finite_float, default=None, help=threshold)


def evaluate(sae: Any, model: Any, out: Path, *, corpus: str, n_sequences: int, context_size: int,
             threshold: float | None = None, batch_size: int = 4) -> dict[str, Any]:
    """Metrics and feature contexts from the same routed passes over held-out text, written under `out`."""
    tokens = corpus_tokens(model, corpus, n_sequences, context_size)
    special = sorted({getattr(model.tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")} - {None})
    collect = FeatureContextCollector(model, sae, ContextRules(threshold=threshold), special)
    kwargs = {"batch_size": batch_size, "exclude_special_tokens": special, "features": collect}
    metrics = run_route_evals(sae, model, tokens, **kwargs)
    write_routing_chart(metrics, out / "routing_share.png")
    collect.write(out / "feature_contexts.json")
    atomic_write_json(out / "eval.json", metrics, indent=2)
    return metrics


def format_eval(metrics: dict[str, Any]) -> str:
    return "\n".join(f"  {k:<68} {metrics[k]:{'.4g' * isinstance(metrics[k], float)}}" for k in SHOWN)


def run(args: argparse.Namespace) -> int:
    claim_folder(args.out, OUTPUTS, create=False)  # refused before the model loads
    sae, model = _common.load_sae_and_model(args)
    names = ("corpus", "n_sequences", "context_size", "threshold", "batch_size")
    metrics = evaluate(sae, model, claim_folder(args.out, OUTPUTS), **{k: getattr(args, k) for k in names})
    print(f"evaluation written to {args.out}/eval.json\n{format_eval(metrics)}")
    return 0
