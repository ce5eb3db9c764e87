"""Are RouteSAE's features more interpretable than per-layer TopK SAEs'? The paper's comparison, offline
model.

RouteSAE and one TopK SAE per routed layer (the paper's baseline; `quality.py`'s training, caching and
preprocessing reused) are trained on the same cached SmolLM2-135M activations, then on the same held-out
tokens:
  1. features are counted with the paper's rules (`analysis.feature_contexts`), overall and per routed layer
     (a per-layer SAE's features belong to its layer; a routed feature to its dominant routed layer);
  2. the same judge scores `--n-features` sampled features of each method with the paper rubric and the
     detection protocol (`sae_lens_routing.interpret`), reported overall and per routed layer.
Without `--judge-url`, or when the judge cannot be reached, step 2 is skipped (said so) and the run exits 0.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/interpretability.py                       # counting only
    OPENAI_API_KEY=... .venv/bin/python benchmarks/interpretability.py \\
        --judge-url https://api.openai.com/v1 --judge-model gpt-4o-mini                  # + the judge
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from quality import AUX, EPS, HOOKS, batches_of, cache_activations, train
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from sae_lens_routing import RouteTrainingSAE, RouteTrainingSAEConfig
from sae_lens_routing.analysis.feature_contexts import Activation, ContextRules, contexts_from_activations
from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.interpret import InterpretContexts, JudgeConfig, interpret_features
from sae_lens_routing.interpret.contexts import DetectionRules, detection_samples, layer_shares
from sae_lens_routing.offline.corpus import corpus_tokens
from sae_lens_routing.offline.local_model import load_local_model
from sae_lens_routing.saes.router import standardize

RESULTS = Path(__file__).parent / "results"
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # acts -> (feature acts, layer index)


@torch.no_grad()
def method_contexts(
    encoders: list[tuple[int, Encode]],
    acts: torch.Tensor,
    strings: list[list[str]],
    keep: torch.Tensor,
    rules: ContextRules,
) -> InterpretContexts:
    """Paper contexts, detection excerpts and layer shares of every counted feature of one method.

    `encoders`: (feature id offset, encode) pairs; a per-layer method has one per layer, its ids offset so
    the L SAEs' features stay distinct."""
    found, rows = [], []
    for offset, encode in encoders:
        for start in range(0, len(acts), 8):
            feats, layers = encode(acts[start : start + 8].float())
            feats = feats * keep[start : start + 8, :, None]
            s, p, f = torch.nonzero(feats > 0, as_tuple=True)
            v, lay = feats[s, p, f], layers[s, p]
            rows.append(
                torch.stack([(s + start).float(), p.float(), (f + offset).float(), v, lay.float()], 1)
            )
            hot = v > rules.threshold
            for si, pi, fi, vi, li in zip(*(t[hot].tolist() for t in (s, p, f, v, lay))):
                found.append(Activation(start + si, pi, fi + offset, vi, li))
    table = torch.cat(rows)
    entries = contexts_from_activations(strings, found, HOOKS, rules)
    counted = {f: e.contexts for f, e in entries.items() if e.is_feature(rules)}
    return InterpretContexts(
        hook_names=HOOKS,
        features=counted,
        layer_shares={f: layer_shares(table, f, len(HOOKS)) for f in counted},
        detection={f: detection_samples(strings, table, f, DetectionRules(), 0) for f in counted},
        n_latents_with_contexts=len(entries),
    )


def per_layer_counts(ctx: InterpretContexts) -> dict[str, int]:
    dominant = [HOOKS[s.index(max(s))] for s in ctx.layer_shares.values()]
    return {h: dominant.count(h) for h in HOOKS}


def judge_reachable(url: str) -> str | None:
    """None when something answers HTTP at `url` (any status), else why not."""
    try:
        urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10)
    except urllib.error.HTTPError:
        return None  # it answered (401/404...): reachable
    except (urllib.error.URLError, OSError) as e:
        return f"{url} unreachable ({e})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-tokens", type=int, default=120_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dead-window", type=int, default=50)
    parser.add_argument("--count-sequences", type=int, default=160, help="held-out 128-token sequences")
    parser.add_argument(
        "--threshold", type=float, help="feature-count activation threshold (default: the package's)"
    )
    parser.add_argument("--judge-url")
    parser.add_argument("--judge-model", default="gpt-4o-mini")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--n-features", type=int, default=100, help="features judged per method (paper: 100)")
    parser.add_argument(
        "--output", default="interpretability.json", help="file name under benchmarks/results/"
    )
    args = parser.parse_args()
    for name in ("train_tokens", "batch", "d_sae", "k", "count_sequences", "n_features"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = load_local_model("smollm2")
    bos, context = model.tokenizer.bos_token_id, 128
    n_train = args.train_tokens // (context - 1) + 1
    tokens = corpus_tokens(model, "bbcnews", n_train + args.count_sequences, context, seed=3)
    train_tokens, count_tokens = tokens[:n_train], tokens[n_train:]
    acts = cache_activations(model, train_tokens)[train_tokens != bos][: args.train_tokens]
    count_acts = cache_activations(model, count_tokens)
    keep = count_tokens != bos
    strings = [
        [model.tokenizer.decode([t]) if t != bos else "" for t in row.tolist()] for row in count_tokens
    ]
    steps, d = len(acts) // args.batch, acts.shape[-1]

    route = RouteTrainingSAE(
        RouteTrainingSAEConfig(d_in=d, d_sae=args.d_sae, k=args.k, hook_names=HOOKS, aux_loss_coefficient=AUX)
    )
    train(route, batches_of(acts, args.batch, 0), steps, args.lr, args.dead_window)
    route.eval()

    def encode_routed(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = route.forward_routed(a)
        return out.feature_acts, out.layer_index

    std_acts = standardize(acts.float(), EPS).x.half()
    topk_cfg = TopKTrainingSAEConfig(d_in=d, d_sae=args.d_sae, k=args.k, aux_loss_coefficient=AUX)
    layer_encoders: list[tuple[int, Encode]] = []
    for layer in range(len(HOOKS)):
        torch.manual_seed(0)
        sae = TopKTrainingSAE(topk_cfg)
        train(sae, batches_of(std_acts[:, layer], args.batch, layer), steps, args.lr, args.dead_window)
        sae.eval()

        def encode_layer(
            a: torch.Tensor, sae: Any = sae, layer: int = layer
        ) -> tuple[torch.Tensor, torch.Tensor]:
            feats = sae.encode(standardize(a[:, :, layer], EPS).x)
            return feats, torch.full(feats.shape[:2], layer)

        layer_encoders.append((layer * args.d_sae, encode_layer))
    # None: 15/sqrt(2048)*sqrt(d_in)
    rules = ContextRules(threshold=args.threshold).resolved(count_acts.shape[-1])
    methods = {
        "routesae": method_contexts([(0, encode_routed)], count_acts, strings, keep, rules),
        "topk_per_layer": method_contexts(layer_encoders, count_acts, strings, keep, rules),
    }
    results: dict[str, Any] = {
        name: {"features_counted": len(c.features), "features_counted_per_layer": per_layer_counts(c)}
        for name, c in methods.items()
    }
    print(json.dumps(results, indent=1))

    skipped = "no --judge-url given" if not args.judge_url else judge_reachable(args.judge_url)
    if skipped:
        print(f"judge part skipped: {skipped}; only the feature counts were measured")
    else:
        judge = JudgeConfig(url=args.judge_url, model=args.judge_model, api_key_env=args.api_key_env)
        for name, ctx in methods.items():
            if not ctx.features:
                print(f"{name}: no feature counted at threshold {rules.threshold}: nothing to judge")
                continue
            out = (RESULTS / args.output).with_name(
                f"{Path(args.output).stem}_{name}"
            )  # answers, per feature
            result = interpret_features(
                judge=judge, out=out, contexts=ctx, n_features=args.n_features, protocol="both", seed=0
            )
            summary = result.summary
            results[name] |= {
                "mean_paper_score": summary["paper"]["mean_score"],
                "paper_categories": summary["paper"]["categories"],
                "mean_detection_balanced_accuracy": summary["detection"]["mean_balanced_accuracy"],
                "per_layer": {
                    h: {
                        "mean_paper_score": summary["paper"]["per_layer"][h]["mean_score"],
                        "mean_detection_balanced_accuracy": summary["detection"]["per_layer"][h][
                            "mean_balanced_accuracy"
                        ],
                    }
                    for h in HOOKS
                },
                "judge_usage": result.usage,
            }
    out = {
        "model": "SmolLM2-135M-Instruct",
        "corpus": "bbcnews",
        "routed_hooks": HOOKS,
        "train_tokens_per_method": steps * args.batch,
        "d_sae": args.d_sae,
        "k": args.k,
        "count_tokens": int(keep.sum()),
        "count_threshold": rules.threshold,
        "judge": None if skipped else {"url": args.judge_url, "model": args.judge_model},
        "judge_skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 1),
        **results,
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / args.output, out, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k not in results}, indent=1))


if __name__ == "__main__":
    main()
