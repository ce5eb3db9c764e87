"""RouteSAE vs baselines on a real model (SmolLM2-135M, BBC News, offline), same token budget, k and d_sae.

  routesae        RouteSAE, hard routing (this package)
  topk_per_layer  one TopK SAE per routed layer (SAELens's TopKTrainingSAE), each trained on its own layer
  shared_topk     one TopK SAE trained on all routed layers' (token, layer) rows (MLSAE-style)
  random_router   RouteSAE whose router is replaced by a uniform random choice of layer per token (weight 1)

All four see per-token standardised activations (the paper's preprocessing) and train with Adam for the same
number of steps on batches of the same size drawn from one cache of activations (computed once), with the same
k, d_sae and SAELens TopK aux loss (1/32). Per-layer methods are spliced and scored at each routed layer
separately and averaged over layers; routed ones are spliced at each token's routed layer (`routed_splice`).
Features are counted with the paper's rules (>4 contexts, <=32 token types; threshold
15/sqrt(2048)*sqrt(d_in),
the paper's 15 scaled to this model's width, and the paper's absolute 15 beside it) on a separate held-out set
of
sequences (cached once), the same tokens for every method: the per-layer method's count is the sum over its
L SAEs (so it has L times the latents), the shared SAE's latents collect contexts from every layer.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/quality.py            # ~15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from sae_lens_routing import RouteTrainingSAE, RouteTrainingSAEConfig
from sae_lens_routing.analysis.evals import (
    kl_official_batchmean,
    kl_per_token,
    next_token_ce,
    run_route_evals,
)
from sae_lens_routing.analysis.feature_contexts import (
    Activation,
    ContextRules,
    contexts_from_activations,
    count_features,
    relative_threshold,
)
from sae_lens_routing.atomic import atomic_write_text
from sae_lens_routing.offline.corpus import corpus_tokens
from sae_lens_routing.offline.local_model import load_local_model
from sae_lens_routing.saes.routed_activations import routed_activations
from sae_lens_routing.saes.routed_metrics import routing_shares
from sae_lens_routing.saes.router import Standardized, route, standardize

RESULTS = Path(__file__).parent / "results"
HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3, 10)]  # the demo's routed layers
EPS = 1e-6
AUX = 1 / 32


class UniformRandomRouteSAE(RouteTrainingSAE):
    """Baseline: each token's layer is drawn uniformly at random (router weight exactly 1); W_router is
    unused.

    Overrides the public `route_acts` step only, so training, evaluation and `routed_splice` all see the same
    random decision for a token within one forward (the splice routes once, on the clean pass)."""

    generator = torch.Generator().manual_seed(1234)

    def route_acts(self, acts: torch.Tensor) -> tuple[Standardized, Any]:
        std = standardize(acts, self.cfg.standardize_eps, self.cfg.standardize)
        std.x = std.x.to(self.dtype)
        layer = torch.randint(self.n_layers, std.x.shape[:-2], generator=self.generator)
        logits = F.one_hot(layer, self.n_layers).to(std.x.dtype) * 1e4  # softmax -> exactly one-hot
        return std, route(std.x, logits.to(std.x.device), self.cfg.routing)


@torch.no_grad()
def cache_activations(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """[n_seq, seq, L, d] raw activations of the routed hooks, float16 to save memory."""
    rows = []
    for batch in tokens.split(8):
        rows.append(routed_activations(model, batch, HOOKS)[0].half())
    return torch.cat(rows)


def train(sae: Any, batches: Iterator[torch.Tensor], steps: int, lr: float, dead_window: int) -> float:
    """Adam over `steps` batches with SAELens-style dead-latent bookkeeping (feeds the aux loss); seconds."""
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    since_fired = torch.zeros(sae.cfg.d_sae)
    start = time.perf_counter()
    for step in range(steps):
        step_input = TrainStepInput(
            sae_in=next(batches),
            coefficients={},
            dead_neuron_mask=since_fired > dead_window,
            n_training_steps=step,
            is_logging_step=False,
        )
        out = sae.training_forward_pass(step_input)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        since_fired += 1
        since_fired[(out.feature_acts != 0).any(0)] = 0
    return time.perf_counter() - start


def batches_of(data: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(len(data), generator=gen).split(batch):
            if len(idx) == batch:
                yield data[idx].float()


def count_from_cache(
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    acts: torch.Tensor,
    token_strings: list[list[str]],
    keep: torch.Tensor,
    thresholds: list[float],
) -> dict[str, Any]:
    """Paper's feature count over cached held-out activations, at each activation threshold (the other rules
    are the paper's), plus the largest activation seen. `encode(acts [b, seq, L, d])` returns feature
    activations [b, seq, (rows,) F] and the layer index of each row."""
    found: list[Activation] = []
    max_act = 0.0
    for start in range(0, len(acts), 8):
        feats, layers = encode(acts[start : start + 8].float())
        max_act = max(max_act, feats.max().item())
        idx = torch.nonzero(feats > min(thresholds))
        for row, value in zip(idx.tolist(), feats[tuple(idx.T)].tolist()):
            s, p = row[0], row[1]
            if keep[start + s, p]:
                found.append(Activation(start + s, p, row[-1], value, int(layers[tuple(row[:-1])])))
    counts: dict[str, Any] = {"max_feature_activation": max_act}
    for threshold in thresholds:
        rules = ContextRules(threshold=threshold)
        counts[f"features_counted@{threshold:g}"] = count_features(
            contexts_from_activations(token_strings, found, HOOKS, rules), rules
        )
    counts["features_counted"] = counts[f"features_counted@{thresholds[0]:g}"]
    return counts


@torch.no_grad()
def layer_sae_metrics(sae: Any, model: Any, tokens: torch.Tensor, layer: int, keep: torch.Tensor) -> dict:
    """A single-layer SAE on standardised activations, spliced (de-standardised) at one routed hook."""
    hook = HOOKS[layer]
    clean_logits, cache = model.run_with_cache(tokens, names_filter=[hook])
    std = standardize(cache[hook], EPS)
    feats = sae.encode(std.x)
    recon = sae.decode(feats)
    x, r = std.x[keep].double(), recon[keep].double()
    nmse = ((r - x).pow(2).sum(-1) / x.pow(2).sum(-1)).mean().item()
    fvu = (r - x).pow(2).sum().item() / (x - x.mean(0)).pow(2).sum().item()

    def splice(value: torch.Tensor) -> torch.Tensor:
        return model.run_with_hooks(
            tokens, fwd_hooks=[(hook, lambda act, hook: torch.where(keep[..., None], value, act))]
        )

    sae_logits = splice(std.undo(recon))
    zero_logits = splice(torch.zeros_like(cache[hook]))
    targets = keep[:, :-1] & keep[:, 1:]
    ce = {
        name: next_token_ce(lg, tokens)[targets].mean().item()
        for name, lg in (("clean", clean_logits), ("sae", sae_logits), ("zero", zero_logits))
    }
    fired = (feats[keep] != 0).any(0)
    return {
        "normalized_mse": nmse,
        "fvu": fvu,
        "l0": (feats[keep] != 0).sum(-1).double().mean().item(),
        "kl_div_per_token": kl_per_token(clean_logits, sae_logits)[keep].mean().item(),
        "kl_official_batchmean": kl_official_batchmean(clean_logits, sae_logits),
        "ce_loss_recovered": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
        "delta_ce": ce["sae"] - ce["clean"],
        "dead_latents_on_eval": int((~fired).sum()),
    }


def routed_metrics(sae: Any, model: Any, tokens: torch.Tensor, bos: int) -> dict[str, Any]:
    m = run_route_evals(sae, model, tokens, batch_size=4, exclude_special_tokens=[bos])
    return {
        "normalized_mse": m["reconstruction_quality/normalized_mse"],
        "fvu": m["reconstruction_quality/fvu"],
        "l0": m["sparsity/l0"],
        "kl_div_per_token": m["model_behavior_preservation/kl_div_with_sae"],
        "kl_official_batchmean": m["model_behavior_preservation/kl_div_with_sae_official_batchmean"],
        "ce_loss_recovered": m["model_performance_preservation/ce_loss_score"],
        "delta_ce": m["model_performance_preservation/delta_ce"],
        "dead_latents_on_eval": m["sparsity/latents_silent_on_eval"],
        "routing_share": routing_shares(m),
    }


def mean_over_layers(per_layer: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(d[k] for d in per_layer) / len(per_layer) for k in per_layer[0]}
    out["per_layer"] = per_layer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-tokens", type=int, default=120_000, help="training tokens per method")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dead-window", type=int, default=50, help="steps without firing -> dead (aux loss)")
    parser.add_argument("--eval-sequences", type=int, default=16, help="128-token sequences for CE/KL/MSE")
    parser.add_argument("--count-sequences", type=int, default=160, help="128-token sequences for counting")
    parser.add_argument(
        "--count-thresholds",
        default="relative,15",
        help="activation thresholds for feature counting, comma-separated; "
        "'relative' = 15/sqrt(2048)*sqrt(d_in); "
        "the first is the headline",
    )
    parser.add_argument("--output", default="quality.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    for name in ("train_tokens", "batch", "d_sae", "k", "eval_sequences", "count_sequences"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        if not all(t == "relative" or float(t) > 0 for t in args.count_thresholds.split(",")):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"--count-thresholds must be positive numbers, got {args.count_thresholds!r}"
        ) from None
    if args.train_tokens < args.batch:
        raise ValueError(f"--train-tokens must be >= --batch ({args.batch}), got {args.train_tokens}")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = load_local_model("smollm2")
    bos = model.tokenizer.bos_token_id
    context = 128
    n_train = args.train_tokens // (context - 1) + 1
    tokens = corpus_tokens(
        model, "bbcnews", n_train + args.eval_sequences + args.count_sequences, context, seed=3
    )
    if len(tokens) < n_train + args.eval_sequences + args.count_sequences:
        raise ValueError(f"the corpus has only {len(tokens)} documents of >= {context} tokens")
    train_tokens = tokens[:n_train]
    eval_tokens = tokens[n_train : n_train + args.eval_sequences]
    count_tokens = tokens[n_train + args.eval_sequences :]
    acts = cache_activations(model, train_tokens)[train_tokens != bos][: args.train_tokens]  # [n, L, d]
    count_acts = cache_activations(model, count_tokens)  # [n_seq, seq, L, d]
    count_keep = count_tokens != bos
    count_strings = [[model.tokenizer.decode([t]) for t in row.tolist()] for row in count_tokens]
    eval_keep = eval_tokens != bos
    steps = len(acts) // args.batch
    L, d = len(HOOKS), acts.shape[-1]
    thresholds = [
        relative_threshold(d) if t == "relative" else float(t) for t in args.count_thresholds.split(",")
    ]
    results: dict[str, Any] = {}
    timing: dict[str, float] = {"cache_activations_s": time.perf_counter() - t0}

    def count(encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        return count_from_cache(encode, count_acts, count_strings, count_keep, thresholds)

    route_cfg = RouteTrainingSAEConfig(
        d_in=d, d_sae=args.d_sae, k=args.k, hook_names=HOOKS, aux_loss_coefficient=AUX
    )
    for name, cls in (("routesae", RouteTrainingSAE), ("random_router", UniformRandomRouteSAE)):
        torch.manual_seed(0)
        sae = cls(route_cfg)
        if cls is UniformRandomRouteSAE:
            sae.W_router.requires_grad_(False)
        start = time.perf_counter()
        train(sae, batches_of(acts, args.batch, 0), steps, args.lr, args.dead_window)
        sae.eval()
        results[name] = routed_metrics(sae, model, eval_tokens, bos)

        def encode_routed(a: torch.Tensor, sae: Any = sae) -> tuple[torch.Tensor, torch.Tensor]:
            out = sae.forward_routed(a)
            return out.feature_acts, out.layer_index

        with torch.no_grad():
            results[name] |= count(encode_routed)
        timing[f"{name}_s"] = time.perf_counter() - start

    std_acts = standardize(acts.float(), EPS).x.half()  # [n, L, d] standardised per token and layer
    topk_cfg = TopKTrainingSAEConfig(d_in=d, d_sae=args.d_sae, k=args.k, aux_loss_coefficient=AUX)
    layer_ids = torch.arange(L)

    start = time.perf_counter()
    per_layer, counted = [], []
    for layer in range(L):
        torch.manual_seed(0)
        sae = TopKTrainingSAE(topk_cfg)
        train(sae, batches_of(std_acts[:, layer], args.batch, layer), steps, args.lr, args.dead_window)
        sae.eval()
        per_layer.append(layer_sae_metrics(sae, model, eval_tokens, layer, eval_keep))

        def encode_layer(
            a: torch.Tensor, sae: Any = sae, layer: int = layer
        ) -> tuple[torch.Tensor, torch.Tensor]:
            feats = sae.encode(standardize(a[:, :, layer], EPS).x)
            return feats, torch.full(feats.shape[:2], layer)

        with torch.no_grad():
            counted.append(count(encode_layer))
    results["topk_per_layer"] = mean_over_layers(per_layer) | {  # counts summed over the L SAEs
        k: (max if k == "max_feature_activation" else sum)(c[k] for c in counted) for k in counted[0]
    }
    timing["topk_per_layer_s"] = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(0)
    shared = TopKTrainingSAE(topk_cfg)
    pool = std_acts.reshape(-1, d)  # every (token, layer) row; sampled to the same budget as the others
    train(shared, batches_of(pool, args.batch, 7), steps, args.lr, args.dead_window)
    shared.eval()

    def encode_shared(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = shared.encode(standardize(a, EPS).x)  # [b, seq, L, F]
        return feats, layer_ids.expand(*feats.shape[:2], L)

    results["shared_topk"] = mean_over_layers(
        [layer_sae_metrics(shared, model, eval_tokens, i, eval_keep) for i in range(L)]
    )
    with torch.no_grad():
        results["shared_topk"] |= count(encode_shared)
    timing["shared_topk_s"] = time.perf_counter() - start
    timing["total_s"] = time.perf_counter() - t0

    out = {
        "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "model": "SmolLM2-135M-Instruct",
        "corpus": "bbcnews",
        "routed_hooks": HOOKS,
        "train_tokens_per_method": steps * args.batch,
        "batch": args.batch,
        "steps": steps,
        "d_sae": args.d_sae,
        "k": args.k,
        "lr": args.lr,
        "aux_loss_coefficient": AUX,
        "eval_tokens": int(eval_keep.sum()),
        "count_tokens": int(count_keep.sum()),
        "count_thresholds": thresholds,  # the first is the headline `features_counted`
        "timing": timing,
        **results,
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / args.output, json.dumps(out, indent=2))
    cols = [
        "normalized_mse",
        "fvu",
        "l0",
        "kl_div_per_token",
        "kl_official_batchmean",
        "ce_loss_recovered",
        "delta_ce",
        "features_counted",
        "dead_latents_on_eval",
        "max_feature_activation",
        *[f"features_counted@{t:g}" for t in thresholds[1:]],
    ]
    print("| method | " + " | ".join(cols) + " |")
    for name in ("routesae", "topk_per_layer", "shared_topk", "random_router"):
        print(f"| {name} | " + " | ".join(f"{results[name][c]:.4g}" for c in cols) + " |")
    for name in ("routesae", "random_router"):
        print(name, "routing share", {h: round(v, 3) for h, v in results[name]["routing_share"].items()})
    print(json.dumps(timing, indent=2))


if __name__ == "__main__":
    main()
