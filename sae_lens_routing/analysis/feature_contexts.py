"""The paper's feature contexts and feature counting (rules of the official `application.py`).

A latent's activation on a token counts when it exceeds `threshold`. The paper's 15 was set for Llama-3.2-1B,
where a standardised token has norm sqrt(2048) = 45; at another width the same 15 means something else (at d_in
576 no latent of any SAE here ever reaches it), so by default the threshold scales with the standardised norm:
`15 / sqrt(2048) * sqrt(d_in)` (7.95 at 576, the paper's 15 at 2048). `ContextRules(threshold=15.0)` is the
paper's absolute rule. A count depends on how much text was read, so every count is reported with the threshold
and the number of tokens read (`feature_metrics`). Each counted
activation is shown in its sentence (at most `max_context_tokens` tokens, the activating token marked `<<tok>>`).
Per latent, only the `contexts_per_token` strongest contexts of each activating token *type* are kept; a type is
the token's text stripped of whitespace and lower-cased, as the official code keys it (" The" and "the" are one
type). A latent counts as an interpretable *feature* if it keeps more than `min_contexts - 1` contexts (the
paper: > 4) and its activating tokens are at most `max_token_types` distinct types (the paper: <= 32).

Checked against the official `Applier.get_context` (src/utils.py; `application.py` calls it with threshold=15,
max_length=64, max_per_token=2, lines=4). Two deliberate differences, both about context text only (never about
what is counted): a token ending in ".", "!" or "?" or containing a newline ends a sentence (the official set is
the exact tokens ".", "!", "?", '"' and its tokenizer's end-of-text), and a sentence longer than
`max_context_tokens` is clipped keeping the preceding tokens first (the official code centres a window on the
activating token).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.saes.routed_activations import routed_activations

SENTENCE_END = (".", "!", "?")
PAPER_THRESHOLD, PAPER_D_IN = 15.0, 2048


def relative_threshold(d_in: int) -> float:
    """The paper's threshold at the paper's width, scaled with the standardised token norm sqrt(d_in)."""
    return PAPER_THRESHOLD * math.sqrt(d_in / PAPER_D_IN)


@dataclass(frozen=True)
class ContextRules:
    threshold: float | None = None
    """Activation a context must exceed; None = `relative_threshold(d_in)`, 15.0 = the paper's absolute rule."""
    max_context_tokens: int = 64
    contexts_per_token: int = 2
    min_contexts: int = 5  # a feature needs more than 4 stored contexts
    max_token_types: int = 32

    def __post_init__(self) -> None:
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0):
            raise ValueError(f"threshold must be a finite number >= 0 (or None for the relative rule), got {t!r}")

    def resolved(self, d_in: int) -> ContextRules:
        """These rules with the threshold made concrete for an SAE of width `d_in`."""
        return self if self.threshold is not None else replace(self, threshold=relative_threshold(d_in))

    @property
    def threshold_rule(self) -> str:
        return "absolute (set by the caller)" if self.threshold is not None else "relative: 15/sqrt(2048)*sqrt(d_in)"


@dataclass(frozen=True)
class Activation:
    seq: int
    pos: int
    feature: int
    value: float
    layer: int


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
        """The routed layer most of this latent's contexts come from."""
        return Counter(c["layer"] for c in self.contexts).most_common(1)[0][0]


def token_type(token: str) -> str:
    """The official code's token class: the token's text stripped and lower-cased."""
    return token.strip().lower()


def ends_sentence(token: str) -> bool:
    stripped = token.strip()
    return "\n" in token or (bool(stripped) and stripped.endswith(SENTENCE_END))


def sentence_context(tokens: list[str], pos: int, max_tokens: int) -> str:
    """The sentence around `pos` (bounded by sentence-ending tokens), clipped to `max_tokens` (the preceding
    tokens first: a causal model's activation depends on them), the activating token marked."""
    start = pos
    while start > 0 and not ends_sentence(tokens[start - 1]) and pos - start + 1 < max_tokens:
        start -= 1
    end = pos
    while end < len(tokens) - 1 and not ends_sentence(tokens[end]) and end - start + 1 < max_tokens:
        end += 1
    parts = [f"<<{t}>>" if i == pos else t for i, t in enumerate(tokens[start : end + 1], start)]
    return "".join(parts).strip()


def contexts_from_activations(
    token_strings: list[list[str]],
    activations: Iterable[Activation],
    hook_names: list[str],
    rules: ContextRules = ContextRules(),
) -> dict[int, FeatureContexts]:
    """Keep the top `contexts_per_token` contexts per (latent, activating token) above the threshold."""
    _require_threshold(rules)
    best: dict[tuple[int, str], list[Activation]] = {}
    for act in activations:
        if act.value <= rules.threshold:
            continue
        key = (act.feature, token_type(token_strings[act.seq][act.pos]))
        kept = sorted([*best.get(key, []), act], key=lambda a: -a.value)[: rules.contexts_per_token]
        best[key] = kept
    results: dict[int, FeatureContexts] = {}
    for (feature, token), acts in sorted(best.items(), key=lambda kv: (kv[0][0], -kv[1][0].value)):
        entry = results.setdefault(feature, FeatureContexts(feature))
        for a in acts:
            entry.contexts.append(
                {
                    "token": token,
                    "activation": round(a.value, 4),
                    "layer": hook_names[a.layer],
                    "context": sentence_context(token_strings[a.seq], a.pos, rules.max_context_tokens),
                }
            )
    for entry in results.values():
        entry.contexts.sort(key=lambda c: -c["activation"])
    return results


def _require_threshold(rules: ContextRules) -> None:
    if rules.threshold is None:
        raise ValueError("ContextRules.threshold is None: call rules.resolved(sae.cfg.d_in) first")


def count_features(results: dict[int, FeatureContexts], rules: ContextRules = ContextRules()) -> int:
    return sum(entry.is_feature(rules) for entry in results.values())


def feature_metrics(
    results: dict[int, FeatureContexts], rules: ContextRules, tokens_read: int, hook_names: list[str]
) -> dict[str, Any]:
    """The feature count with what it depends on (threshold, tokens read) and per routed layer."""
    per_layer = Counter(e.layer for e in results.values() if e.is_feature(rules))
    return {
        "features/n_counted": count_features(results, rules),
        "features/threshold": rules.threshold,
        "features/threshold_rule": rules.threshold_rule,
        "features/tokens_read": tokens_read,
        "features/n_latents_with_contexts": len(results),
        **{f"features/n_counted_per_layer/{h}": per_layer.get(h, 0) for h in hook_names},
    }


class FeatureContextCollector:
    """Collects the activations above the threshold from routed batches as they are computed, so an
    evaluation's routing (`run_route_evals(..., features=collector)`) serves the feature contexts too."""

    def __init__(
        self,
        model: Any,
        sae: Any,
        rules: ContextRules = ContextRules(),
        exclude_special_tokens: list[int] | None = None,
    ):
        self.tokenizer = getattr(model, "tokenizer", None)  # without one, a token's type is its id
        self.hook_names = list(sae.cfg.hook_names)
        self.rules = rules.resolved(sae.cfg.d_in)
        self.excluded = set(exclude_special_tokens or [])
        self.token_strings: list[list[str]] = []
        self.activations: list[Activation] = []
        self.tokens_read = 0

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, routed: Any) -> None:
        start = len(self.token_strings)
        keep = ~torch.isin(tokens, torch.tensor(sorted(self.excluded), dtype=tokens.dtype, device=tokens.device))
        self.tokens_read += int(keep.sum())
        decode = self.tokenizer.decode if self.tokenizer is not None else lambda ids: f" #{ids[0]}"
        self.token_strings += [[decode([t]) for t in row.tolist()] for row in tokens]
        feature_acts = routed.feature_acts
        seq, pos, feat = torch.nonzero(feature_acts > self.rules.threshold, as_tuple=True)
        values = feature_acts[seq, pos, feat].tolist()
        layers = routed.layer_index[seq, pos].tolist()
        for s, p, f, v, layer in zip(seq.tolist(), pos.tolist(), feat.tolist(), values, layers):
            if int(tokens[s, p]) not in self.excluded:
                self.activations.append(Activation(start + s, p, f, v, layer))

    def results(self) -> dict[int, FeatureContexts]:
        return contexts_from_activations(self.token_strings, self.activations, self.hook_names, self.rules)

    def metrics(self) -> dict[str, Any]:
        return feature_metrics(self.results(), self.rules, self.tokens_read, self.hook_names)

    def write(self, path: str | Path) -> dict[str, Any]:
        """`write_feature_contexts` of what this collector saw."""
        return write_feature_contexts(
            self.results(), path, self.rules, tokens_read=self.tokens_read, hook_names=self.hook_names
        )


def find_feature_contexts(sae: Any, model: Any, tokens: torch.Tensor, **kwargs: Any) -> dict[int, FeatureContexts]:
    """Run `model` on `tokens` [n, seq], route and encode every token, and collect the contexts (the keyword
    arguments of `collect_feature_contexts`)."""
    return collect_feature_contexts(sae, model, tokens, **kwargs).results()


@torch.no_grad()
def collect_feature_contexts(
    sae: Any,
    model: Any,
    tokens: torch.Tensor,
    *,
    rules: ContextRules = ContextRules(),
    batch_size: int = 8,
    exclude_special_tokens: list[int] | None = None,
) -> FeatureContextCollector:
    """Route and encode `tokens` batch by batch into a collector (its contexts, rules, tokens read, `metrics()`)."""
    hooks = list(sae.cfg.hook_names)
    collect = FeatureContextCollector(model, sae, rules, exclude_special_tokens)
    for batch in tokens.split(batch_size):
        acts, _, _ = routed_activations(model, batch, hooks)
        collect(batch, sae.forward_routed(acts))
    return collect


def write_feature_contexts(
    results: dict[int, FeatureContexts],
    path: str | Path,
    rules: ContextRules,
    *,
    tokens_read: int,
    hook_names: list[str],
) -> dict[str, Any]:
    """One JSON with every latent's contexts, whether it counts as a feature, and the feature count next to the
    threshold and the tokens read (a collector's: `collector.write(path)`)."""
    _require_threshold(rules)
    payload = {
        "rules": asdict(rules),
        **{k.removeprefix("features/"): v for k, v in feature_metrics(results, rules, tokens_read, hook_names).items()},
        "features": {
            str(f): {
                "is_feature": e.is_feature(rules),
                "n_token_types": len(e.token_types),
                "contexts": e.contexts,
            }
            for f, e in sorted(results.items())
        },
    }
    atomic_write_json(path, payload, indent=1)
    return payload
