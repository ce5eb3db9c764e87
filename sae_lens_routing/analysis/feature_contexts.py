"""The paper's feature contexts and feature counting (rules of the official `application.py`).

A latent's activation on a token counts when it exceeds `threshold` (15 on the standardised scale). Each counted
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

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.saes.routed_activations import routed_activations

SENTENCE_END = (".", "!", "?")


@dataclass(frozen=True)
class ContextRules:
    threshold: float = 15.0
    max_context_tokens: int = 64
    contexts_per_token: int = 2
    min_contexts: int = 5  # a feature needs more than 4 stored contexts
    max_token_types: int = 32


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


def count_features(results: dict[int, FeatureContexts], rules: ContextRules = ContextRules()) -> int:
    return sum(entry.is_feature(rules) for entry in results.values())


class FeatureContextCollector:
    """Collects the activations above `rules.threshold` from routed batches as they are computed, so an
    evaluation's routing (`run_route_evals(..., on_routed=collector)`) serves the feature contexts too."""

    def __init__(
        self,
        model: Any,
        hook_names: list[str],
        rules: ContextRules = ContextRules(),
        exclude_special_tokens: list[int] | None = None,
    ):
        self.tokenizer = model.tokenizer
        self.hook_names = list(hook_names)
        self.rules = rules
        self.excluded = set(exclude_special_tokens or [])
        self.token_strings: list[list[str]] = []
        self.activations: list[Activation] = []

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, routed: Any) -> None:
        start = len(self.token_strings)
        self.token_strings += [[self.tokenizer.decode([t]) for t in row.tolist()] for row in tokens]
        feature_acts = routed.feature_acts
        seq, pos, feat = torch.nonzero(feature_acts > self.rules.threshold, as_tuple=True)
        values = feature_acts[seq, pos, feat].tolist()
        layers = routed.layer_index[seq, pos].tolist()
        for s, p, f, v, layer in zip(seq.tolist(), pos.tolist(), feat.tolist(), values, layers):
            if int(tokens[s, p]) not in self.excluded:
                self.activations.append(Activation(start + s, p, f, v, layer))

    def results(self) -> dict[int, FeatureContexts]:
        return contexts_from_activations(self.token_strings, self.activations, self.hook_names, self.rules)


@torch.no_grad()
def find_feature_contexts(
    sae: Any,
    model: Any,
    tokens: torch.Tensor,
    *,
    rules: ContextRules = ContextRules(),
    batch_size: int = 8,
    exclude_special_tokens: list[int] | None = None,
) -> dict[int, FeatureContexts]:
    """Run `model` on `tokens` [n, seq], route and encode every token, and collect the contexts."""
    hooks = list(sae.cfg.hook_names)
    collect = FeatureContextCollector(model, hooks, rules, exclude_special_tokens)
    for batch in tokens.split(batch_size):
        acts, _, _ = routed_activations(model, batch, hooks)
        collect(batch, sae.forward_routed(acts))
    return collect.results()


def write_feature_contexts(
    results: dict[int, FeatureContexts], path: str | Path, rules: ContextRules = ContextRules()
) -> dict[str, Any]:
    """One JSON with every latent's contexts, whether it counts as a feature, and the feature count."""
    payload = {
        "rules": asdict(rules),
        "n_latents_with_contexts": len(results),
        "n_features": count_features(results, rules),
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
