"""Steering with routed features: add to, or scale, chosen features of every token at its routed layer during
generation, compared with the unsteered continuation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from sae_lens_routing.analysis.splice import FeatureEdit, routed_generate
from sae_lens_routing.saes.route_sae import RoutedOutput


def feature_steering(
    features: Mapping[int, float], mode: Literal["add", "multiply"] = "add", d_sae: int | None = None
) -> FeatureEdit:
    """An `on_features` edit: feature i += value (add) or feature i *= value (multiply)."""
    bad = [i for i in features if not isinstance(i, int) or i < 0 or (d_sae is not None and i >= d_sae)]
    if bad:
        raise ValueError(f"feature indices must be integers in [0, d_sae={d_sae}), got {bad}")
    idx = torch.tensor(list(features))
    values = torch.tensor([float(v) for v in features.values()])

    def edit(feature_acts: torch.Tensor, routed: RoutedOutput) -> torch.Tensor:
        v = values.to(feature_acts.device, feature_acts.dtype)
        feature_acts[..., idx] = feature_acts[..., idx] + v if mode == "add" else feature_acts[..., idx] * v
        return feature_acts

    return edit


@dataclass
class SteeringResult:
    prompt: str
    unsteered: str
    steered: str
    unsteered_logits: list[torch.Tensor]
    steered_logits: list[torch.Tensor]


@torch.no_grad()
def steer(
    model: Any,
    sae: Any,
    prompt: str,
    features: Mapping[int, float],
    *,
    mode: Literal["add", "multiply"] = "add",
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    seed: int = 0,
) -> SteeringResult:
    """Generate from `prompt` without and with the feature edit (the SAE error term kept, so the difference
    is the steering alone). Multiplying latents that never fired changes nothing, so it is refused."""
    steer_edit = feature_steering(features, mode, sae.cfg.d_sae)
    idx = list(features)
    fired = torch.zeros(len(idx), dtype=torch.bool)

    def edit(feature_acts: torch.Tensor, routed: RoutedOutput) -> torch.Tensor:
        fired.logical_or_((feature_acts[..., idx] != 0).reshape(-1, len(idx)).any(0).cpu())
        return steer_edit(feature_acts, routed)

    run = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    base_tokens, base_logits = routed_generate(model, sae, prompt, splice=False, **run)
    tokens, logits = routed_generate(model, sae, prompt, on_features=edit, **run)
    silent = [f for f, on in zip(idx, fired.tolist(), strict=True) if not on]
    if mode == "multiply" and silent:
        raise ValueError(
            f"feature(s) {silent} never fired on the prompt {prompt!r} (nor on the generated tokens), so "
            "multiplying them changes nothing; use mode 'add' (CLI --mode add) to switch them on"
        )
    n = model.to_tokens(prompt).shape[1]
    return SteeringResult(
        prompt, model.to_string(base_tokens[0, n:]), model.to_string(tokens[0, n:]), base_logits, logits
    )
