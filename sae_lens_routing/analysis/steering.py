"""Steering with routed features: add to, or scale, chosen features of every token at its routed layer during
generation, compared with the unsteered continuation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from sae_lens_routing.analysis.splice import FeatureEdit, routed_generate


def feature_steering(
    features: Mapping[int, float], mode: Literal["add", "multiply"] = "add", d_sae: int | None = None
) -> FeatureEdit:
    """An `on_features` edit: feature i += value (add) or feature i *= value (multiply)."""
    bad = [i for i in features if not isinstance(i, int) or i < 0 or (d_sae is not None and i >= d_sae)]
    if bad:
        raise ValueError(f"feature indices must be integers in [0, d_sae={d_sae}), got {bad}")
    idx, values = torch.tensor(list(features)), torch.tensor([float(v) for v in features.values()])

    def edit(acts: torch.Tensor, routed: Any) -> torch.Tensor:
        v = values.to(acts.device, acts.dtype)
        acts[..., idx] = acts[..., idx] + v if mode == "add" else acts[..., idx] * v
        return acts

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
    model: Any, sae: Any, prompt: str, features: Mapping[int, float], *, max_new_tokens: int = 20,
    mode: Literal["add", "multiply"] = "add", temperature: float = 0.0, seed: int = 0,
) -> SteeringResult:  # fmt: skip
    """Generate from `prompt` without and with the feature edit (the SAE error term kept, so the difference
    is the steering alone). Multiplying latents that never fired changes nothing, so it is refused."""
    steer_edit, idx = feature_steering(features, mode, sae.cfg.d_sae), list(features)
    fired = torch.zeros(len(idx), dtype=torch.bool)

    def edit(acts: torch.Tensor, routed: Any) -> torch.Tensor:
        fired.logical_or_((acts[..., idx] != 0).reshape(-1, len(idx)).any(0).cpu())
        return steer_edit(acts, routed)

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
    steered = [model.to_string(t[0, n:]) for t in (base_tokens, tokens)]
    return SteeringResult(prompt, *steered, base_logits, logits)
