"""`interpret_features`: sample counted features, ask the judge (paper rubric and/or detection), write results.

Requests per feature: the paper protocol 1, detection 2 (the explanation, then one verdict list over the
shuffled held-out excerpts); an unparsable answer is asked once more (a distinct cached request), then counted
as unparsed. Features are judged concurrently (`JudgeConfig.concurrency` threads); every answer is on disk
before it is used, so a killed run, started again, sends only what it had not received.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_lens_routing.interpret.contexts import (
    InterpretContexts,
    compute_contexts,
    read_contexts,
    write_contexts,
)
from sae_lens_routing.interpret.judge import Judge, JudgeConfig, approx_tokens, estimated_cost, format_cost
from sae_lens_routing.interpret.prompts import (
    detect_messages,
    explain_messages,
    paper_messages,
    parse_detection,
    parse_explanation,
    parse_paper,
)
from sae_lens_routing.interpret.results import FeatureInterpretation, InterpretationResult, write_result

PROTOCOLS = ("paper", "detection", "both")
MAX_TOKENS = 128  # the official code's answer budget; plenty for a 0/1 list of ~16 excerpts too
CONTEXTS_FILENAME = "interpret_contexts.json"
CACHE_DIRNAME = "judge_cache"


@dataclass
class DryRunPlan:
    """What a run would send: nothing is sent in a dry run."""

    prompt: list[dict[str, str]]
    n_features: int
    n_requests: int
    est_tokens_in: int
    max_tokens_out: int
    estimated_cost_usd: float | None


def sample_features(contexts: InterpretContexts, n: int, seed: int) -> list[int]:
    counted = sorted(contexts.features)
    return sorted(random.Random(seed).sample(counted, min(n, len(counted))))


def _ask(judge: Judge, messages: list[dict[str, str]], parse: Any) -> tuple[Any, str]:
    """The parsed answer (None after a second unparsable one) and the last raw answer."""
    for attempt in (0, 1):
        answer = judge.complete(messages, MAX_TOKENS, attempt)
        parsed = parse(answer)
        if parsed is not None:
            return parsed, answer
    return None, answer


def balanced_accuracy(labels: list[int], verdicts: list[int]) -> float:
    pos = [v for label, v in zip(labels, verdicts) if label == 1]
    neg = [v for label, v in zip(labels, verdicts) if label == 0]
    return (sum(pos) / len(pos) + sum(1 - v for v in neg) / len(neg)) / 2


def shuffled_heldout(sample: dict[str, Any], feature: int, seed: int) -> list[dict[str, Any]]:
    heldout = list(sample["heldout"])
    random.Random(seed * 1_000_003 + feature).shuffle(heldout)
    return heldout


def heldout_counts(heldout: list[dict[str, Any]]) -> dict[str, int]:
    counts = {
        "activating": sum(h["label"] for h in heldout),
        "non_activating": sum(1 - h["label"] for h in heldout),
    }
    for h in heldout:
        if h["quantile"] is not None:
            counts[f"quantile_{h['quantile']}"] = counts.get(f"quantile_{h['quantile']}", 0) + 1
    return counts


def judge_feature(
    judge: Judge, contexts: InterpretContexts, feature: int, protocol: str, seed: int
) -> FeatureInterpretation:
    shares = contexts.layer_shares[feature]
    result = FeatureInterpretation(
        feature=feature, layer_shares=shares, layer=contexts.hook_names[shares.index(max(shares))]
    )
    if protocol in ("paper", "both"):
        parsed, raw = _ask(judge, paper_messages(contexts.features[feature]), parse_paper)
        result.paper = "scored" if parsed else "unparsed"
        if parsed:
            result.category, result.score, result.explanation = (
                parsed[k] for k in ("category", "score", "explanation")
            )
        else:
            result.unparsed["paper"] = raw
    if protocol in ("detection", "both"):
        sample = contexts.detection[feature]  # type: ignore[index]
        heldout = shuffled_heldout(sample, feature, seed)
        result.heldout = heldout_counts(heldout)
        explanation, raw = _ask(judge, explain_messages(sample["explain"]), parse_explanation)
        result.detection_explanation = explanation
        if explanation is None:
            result.detection, result.unparsed["explanation"] = "unparsed", raw
        elif not result.heldout["activating"] or not result.heldout["non_activating"]:
            result.detection = "no_heldout"  # balanced accuracy needs both kinds
        else:
            texts = [h["text"] for h in heldout]
            verdicts, raw = _ask(
                judge, detect_messages(explanation, texts), lambda a: parse_detection(a, len(texts))
            )
            result.detection = "scored" if verdicts else "unparsed"
            if verdicts:
                labels = [h["label"] for h in heldout]
                result.detection_accuracy = round(balanced_accuracy(labels, verdicts), 4)
            else:
                result.unparsed["verdicts"] = raw
    return result


def plan(contexts: InterpretContexts, features: list[int], protocol: str, model: str) -> DryRunPlan:
    prompts = []
    if protocol in ("paper", "both"):
        prompts += [paper_messages(contexts.features[f]) for f in features]
    if protocol in ("detection", "both"):
        for f in features:
            sample = contexts.detection[f]  # type: ignore[index]
            prompts.append(explain_messages(sample["explain"]))
            typical = "x" * 80  # the explanation is not known yet: a typical length
            prompts.append(detect_messages(typical, [h["text"] for h in sample["heldout"]]))
    tokens_in = sum(approx_tokens(p) for p in prompts)
    return DryRunPlan(
        prompt=prompts[0] if prompts else [],
        n_features=len(features),
        n_requests=len(prompts),
        est_tokens_in=tokens_in,
        max_tokens_out=MAX_TOKENS * len(prompts),
        estimated_cost_usd=estimated_cost(model, tokens_in, MAX_TOKENS * len(prompts)),
    )


def format_plan(p: DryRunPlan, model: str, protocol: str) -> str:
    prompt = "\n".join(f"[{m['role']}]\n{m['content']}" for m in p.prompt)
    per = {"paper": "1", "detection": "2", "both": "3"}[protocol]
    return (
        f"dry run: nothing sent. One full prompt:\n{prompt}\n\n"
        f"requests: {p.n_requests} ({p.n_features} features x {per}; +1 for each unparsable answer)\n"
        f"estimated tokens: ~{p.est_tokens_in} in, <= {p.max_tokens_out} out; "
        f"estimated cost at most {format_cost(model, p.est_tokens_in, p.max_tokens_out)}"
    )


def interpret_features(
    sae: Any = None,
    model: Any = None,
    *,
    judge: JudgeConfig,
    out: str | Path,
    tokens: Any = None,
    contexts: InterpretContexts | str | Path | None = None,
    n_features: int = 100,
    protocol: str = "paper",
    seed: int = 0,
    dry_run: bool = False,
    log: Any = print,
) -> InterpretationResult | DryRunPlan:
    """Judge `n_features` counted features sampled with `seed`; write interpretability.json/.png to `out`.

    Contexts: an `InterpretContexts`, a contexts JSON (this package's, or `evaluate`'s feature_contexts.json
    for the paper protocol), or computed from `sae`, `model` and `tokens` in one routed pass (then written to
    `out/interpret_contexts.json` for reuse). `dry_run` returns the plan and sends nothing."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"--n-features must be a positive integer, got {n_features!r}")
    out = Path(out)
    if isinstance(contexts, (str, Path)):
        if sae is None:
            raise ValueError("reading --contexts needs the SAE (its routed hooks name the layers)")
        contexts = read_contexts(contexts, list(sae.cfg.hook_names))
    elif contexts is None:
        if sae is None or model is None or tokens is None:
            raise ValueError("without contexts, interpret_features needs sae, model and tokens")
        contexts = compute_contexts(sae, model, tokens, seed=seed)
        write_contexts(contexts, out / CONTEXTS_FILENAME)
    if protocol != "paper" and contexts.detection is None:
        raise ValueError(
            "--contexts has no detection excerpts (an evaluate run's feature_contexts.json carries the paper's "
            "contexts only): use --protocol paper, or omit --contexts to compute them"
        )
    if not contexts.features:
        raise ValueError(
            f"no latent counts as a feature on these tokens ({contexts.n_latents_with_contexts} latents had "
            "contexts; the count needs > 4 contexts above the activation threshold): nothing to judge"
        )
    features = sample_features(contexts, n_features, seed)
    if dry_run:
        p = plan(contexts, features, protocol, judge.model)
        log(format_plan(p, judge.model, protocol))
        return p
    client = Judge(judge, out / CACHE_DIRNAME)
    with ThreadPoolExecutor(max_workers=judge.concurrency) as pool:
        futures = [pool.submit(judge_feature, client, contexts, f, protocol, seed) for f in features]
        try:
            judged = [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    u = client.usage
    result = InterpretationResult(
        protocol=protocol,
        judge_model=judge.model,
        judge_url=judge.url,
        seed=seed,
        hook_names=contexts.hook_names,
        n_features_counted=len(contexts.features),
        features=judged,
        usage=u.as_dict(),
        estimated_cost_usd=estimated_cost(judge.model, u.tokens_in, u.tokens_out),
    )
    json_path, png = write_result(result, out)
    log(
        f"judge: {u.requests} requests sent ({u.tokens_in} tokens in, {u.tokens_out} out), {u.cached} answers "
        f"reused from {out / CACHE_DIRNAME}; estimated cost of this run {format_cost(judge.model, u.tokens_in, u.tokens_out)}"
    )
    log(f"interpretability written to {json_path} and {png}")
    return result
