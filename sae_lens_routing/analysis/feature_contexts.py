"""The paper's feature counting: a feature has > 4 contexts above the threshold on <= 32 token types."""

from __future__ import annotations

import math
from collections import Counter, namedtuple
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.saes.routed_activations import routed_activations


def relative_threshold(d_in: int) -> float:
    """The paper's threshold at the paper's width, scaled with the standardised token norm sqrt(d_in)."""
    return 15.0 * math.sqrt(d_in / 2048)


@dataclass(frozen=True)
class ContextRules:
    """`threshold` None: `relative_threshold(d_in)`; 15.0: the paper's absolute rule."""
    threshold: float | None = None
    threshold_rule: str = "absolute (set by the caller)"  # `resolved` names the width-aware rule it applies
    max_context_tokens: int = 64
    contexts_per_token: int = 2
    min_contexts: int = 5
    max_token_types: int = 32

    def __post_init__(self) -> None:
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < math.inf):
            raise ValueError(f"threshold must be a finite number >= 0 (None: the relative rule), got {t!r}")

    def resolved(self, d_in: int) -> ContextRules:
        if self.threshold is not None:
            return self
        rule = f"width-aware: 15 x sqrt(d_in / 2048) with d_in = {d_in} (the paper's 15 at its width)"
        return replace(self, threshold=relative_threshold(d_in), threshold_rule=rule)


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text; a character split over byte-level tokens is shown once, on its last piece (decoded
    alone, each piece is half a character: "\ufffd", or "Â" + "£" for "£"); a lone piece stays "\ufffd"."""
    if tokenizer is None:  # without one, a token's type is its id
        return [f" #{i}" for i in ids]
    texts: list[str] = []
    i = 0
    while i < len(ids):
        n = 1  # grow a run of pieces until it decodes to whole characters (UTF-8: <= 4 bytes)
        while n < 4 and i + n < len(ids) and "\ufffd" in tokenizer.decode(ids[i : i + n]):
            n += 1
        text = tokenizer.decode(ids[i : i + n])
        whole = n > 1 and "\ufffd" not in text
        texts += [""] * (n - 1) + [text] if whole else [tokenizer.decode(ids[i : i + 1])]
        i += n if whole else 1
    return texts


Activation = namedtuple("Activation", "seq pos feature value layer")  # layer: the routed layer's index


@dataclass
class FeatureContexts:
    feature: int
    contexts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def token_types(self) -> set[str]:
        return {c["token"] for c in self.contexts}

    def is_feature(self, rules: ContextRules) -> bool:
        return len(self.contexts) >= rules.min_contexts and len(self.token_types) <= rules.max_token_types

    @property
    def layer(self) -> str:
        return Counter(c["layer"] for c in self.contexts).most_common(1)[0][0]


def sentence_context(tokens: list[str], pos: int, max_tokens: int) -> str:
    """The sentence around `pos` marked `<<tok>>`, clipped keeping preceding tokens first (causal model)."""
    ends = [t.strip().endswith((".", "!", "?")) or "\n" in t for t in tokens]  # "".endswith(...) is False
    start = end = pos
    while start > 0 and not ends[start - 1] and pos - start + 1 < max_tokens:
        start -= 1
    while end < len(tokens) - 1 and not ends[end] and end - start + 1 < max_tokens:
        end += 1
    marked = (f"<<{t}>>" if i == pos else t for i, t in enumerate(tokens[start : end + 1], start))
    return "".join(marked).strip()


def contexts_from_activations(token_strings: list[list[str]], activations: Iterable[Activation],
                              hook_names: list[str],
                              rules: ContextRules = ContextRules()) -> dict[int, FeatureContexts]:
    """The top contexts per (latent, stripped lower-cased token) above the threshold, as the official code."""
    if rules.threshold is None:
        raise ValueError("ContextRules.threshold is None: call rules.resolved(sae.cfg.d_in) first")
    best: dict[tuple[int, str], list[Activation]] = {}
    for act in activations:
        if act.value > rules.threshold:
            key = (act.feature, token_strings[act.seq][act.pos].strip().lower())
            best[key] = sorted([*best.get(key, []), act], key=lambda a: -a.value)[: rules.contexts_per_token]
    results: dict[int, FeatureContexts] = {}
    for (feature, token), acts in sorted(best.items(), key=lambda kv: (kv[0][0], -kv[1][0].value)):
        results.setdefault(feature, FeatureContexts(feature)).contexts += [
            dict(token=token, activation=round(a.value, 4), layer=hook_names[a.layer],
                 context=sentence_context(token_strings[a.seq], a.pos, rules.max_context_tokens))
            for a in acts
        ]
    for entry in results.values():
        entry.contexts.sort(key=lambda c: -c["activation"])
    return results


def count_features(results: dict[int, FeatureContexts], rules: ContextRules = ContextRules()) -> int:
    return sum(entry.is_feature(rules) for entry in results.values())


def feature_metrics(results: dict[int, FeatureContexts], rules: ContextRules, tokens_read: int,
                    hook_names: list[str]) -> dict[str, Any]:
    per_layer = Counter(e.layer for e in results.values() if e.is_feature(rules))
    return {"features/n_counted": count_features(results, rules), "features/threshold": rules.threshold,
            "features/threshold_rule": rules.threshold_rule, "features/tokens_read": tokens_read,
            "features/n_latents_with_contexts": len(results),
            **{f"features/n_counted_per_layer/{h}": per_layer.get(h, 0) for h in hook_names}}


class FeatureContextCollector:
    """Collects activations above the threshold from routed batches, so an evaluation's routing serves too."""

    def __init__(self, model: Any, sae: Any, rules: ContextRules = ContextRules(),
                 exclude_special_tokens: Any = None):
        self.tokenizer = getattr(model, "tokenizer", None)  # without one, a token's type is its id
        self.hook_names = list(sae.cfg.hook_names)
        self.rules = rules.resolved(sae.cfg.d_in)
        self.excluded = torch.tensor(sorted(set(exclude_special_tokens or [])), dtype=torch.long)
        self.token_strings: list[list[str]] = []
        self.activations: list[Activation] = []
        self.tokens_read = 0

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, routed: Any) -> None:
        start = len(self.token_strings)
        keep = ~torch.isin(tokens, self.excluded.to(tokens.device))
        self.tokens_read += int(keep.sum())
        self.token_strings += [token_texts(self.tokenizer, row.tolist()) for row in tokens]
        hits = (routed.feature_acts > self.rules.threshold) & keep[..., None]
        seq, pos, feat = torch.nonzero(hits, as_tuple=True)
        values, layers = routed.feature_acts[hits].tolist(), routed.layer_index[seq, pos].tolist()
        found = zip(seq.tolist(), pos.tolist(), feat.tolist(), values, layers, strict=True)
        self.activations += [Activation(start + s, p, f, v, layer) for s, p, f, v, layer in found]

    def results(self) -> dict[int, FeatureContexts]:
        return contexts_from_activations(self.token_strings, self.activations, self.hook_names, self.rules)

    def metrics(self) -> dict[str, Any]:
        return feature_metrics(self.results(), self.rules, self.tokens_read, self.hook_names)

    def write(self, path: str | Path) -> dict[str, Any]:
        return write_feature_contexts(self.results(), path, self.rules, tokens_read=self.tokens_read,
                                      hook_names=self.hook_names)


@torch.no_grad()
def collect_feature_contexts(sae: Any, model: Any, tokens: torch.Tensor, *,
                             rules: ContextRules = ContextRules(), batch_size: int = 8,
                             exclude_special_tokens: list[int] | None = None) -> FeatureContextCollector:
    collect = FeatureContextCollector(model, sae, rules, exclude_special_tokens)
    for batch in tokens.split(batch_size):
        acts, _, _ = routed_activations(model, batch, list(sae.cfg.hook_names))
        collect(batch, sae.forward_routed(acts))
    return collect


def write_feature_contexts(results: dict[int, FeatureContexts], path: str | Path, rules: ContextRules, *,
                           tokens_read: int, hook_names: list[str]) -> dict[str, Any]:
    metrics = feature_metrics(results, rules, tokens_read, hook_names)
    payload = {"rules": asdict(rules), **{k.removeprefix("features/"): v for k, v in metrics.items()}}
    payload["features"] = {str(f): dict(is_feature=e.is_feature(rules), n_token_types=len(e.token_types),
                                        contexts=e.contexts) for f, e in sorted(results.items())}
    atomic_write_json(path, payload, indent=1)
    return payload
