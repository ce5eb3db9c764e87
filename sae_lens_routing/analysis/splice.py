"""Routed splicing: each token's residual stream is replaced, at the one layer it was routed to, by the SAE's
reconstruction; every other (token, layer) position is left as it is.

Semantics (the official code's, made exact). Routing needs all L routed layers of a token, and the earliest
of them must be replaced before the later ones are computed, so every forward pass runs twice: a clean pass
to the last routed block (started from the stream at `blocks.0.hook_resid_pre` inside the same call) decides
each token's layer and reconstruction; the real pass then replaces those positions as it reaches them. The
reconstruction is `RoutedOutput.routed_layer_reconstruction()`: the SAE encodes `x[layer] * router_weight`,
exactly its training input, and the output is divided by that weight and de-standardised with the token's own
mean and std (the official splice encodes `x[layer]` without the weight, an input the SAE never trained on).

Generation: works for any forward that sees the whole sequence, e.g. `model.generate(...,
use_past_kv_cache=False)` or `routed_generate` below, so generated tokens are spliced and steered too (the
official hook skips every pass whose length differs from the prompt). A KV-cached forward only sees the new
token, which cannot be routed without its context, so it is refused with a clear error.

Soft routing has no single layer to replace (the SAE reconstructs a mix of layers), so it is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from sae_lens_routing.saes.route_sae import RoutedOutput
from sae_lens_routing.saes.routed_activations import (
    check_hooks_in_model,
    is_bridge,
    routed_activations,
    routed_block_range,
)

FeatureEdit = Callable[[torch.Tensor, RoutedOutput], torch.Tensor]
ENTRY_HOOK = "blocks.0.hook_resid_pre"


@dataclass
class SplicePlan:
    """What the clean pass decided for the current forward: per token, its layer and replacement value."""

    layer_index: torch.Tensor  # [batch, pos]
    values: torch.Tensor  # [batch, pos, d_in], raw space
    routed: RoutedOutput
    feature_acts: torch.Tensor  # [batch, pos, d_sae] after `on_features`

    def to(self, dtype: torch.dtype) -> SplicePlan:
        """The replacement values in the model's dtype."""
        return SplicePlan(self.layer_index, self.values.to(dtype), self.routed, self.feature_acts)


def check_spliceable(model: Any, sae: Any) -> None:
    if sae.cfg.routing != "hard":
        raise ValueError(
            "routed splicing needs routing='hard': a soft-routed SAE reconstructs a weighted mix of all L layers, "
            f"which has no single layer to replace (got routing={sae.cfg.routing!r})"
        )
    check_hooks_in_model(model, [ENTRY_HOOK, *sae.cfg.hook_names], "sae.cfg.hook_names / the entry hook")
    if routed_block_range(sae.cfg.hook_names) is None:
        raise ValueError(f"routed splicing needs hooks inside transformer blocks, got {sae.cfg.hook_names}")
    model_device = next(model.parameters()).device
    if not _same_device(model_device, sae.device):
        raise ValueError(
            f"sae is on {sae.device} but the model is on {model_device}: routed splicing runs the SAE inside the "
            f"model's forward; move one of them, e.g. sae.to({str(model_device)!r})"
        )


def _same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """'cuda' and 'cuda:0' name one device when 0 is the current one."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index or a.index is None or b.index is None


@torch.no_grad()
def plan_splice(
    sae: Any,
    routed_acts: torch.Tensor,
    *,
    use_error_term: bool = False,
    on_features: FeatureEdit | None = None,
    replacement: Literal["sae", "zero"] = "sae",
) -> SplicePlan:
    """Replacement values for each token's routed layer from its clean activations [batch, pos, L, d_in]."""
    out = sae.forward_routed(routed_acts.to(sae.dtype))
    return plan_from_routed(
        sae, out, use_error_term=use_error_term, on_features=on_features, replacement=replacement
    ).to(routed_acts.dtype)


@torch.no_grad()
def plan_from_routed(
    sae: Any,
    out: RoutedOutput,
    *,
    use_error_term: bool = False,
    on_features: FeatureEdit | None = None,
    replacement: Literal["sae", "zero"] = "sae",
) -> SplicePlan:
    """A plan from a routing already computed: one `forward_routed` serves every plan of the same tokens (the
    SAE splice and the zero-ablation baseline of an evaluation, say)."""
    clean = out.routed_layer_input()
    feature_acts = out.feature_acts
    if replacement == "zero":
        values = torch.zeros_like(clean)
    else:
        recon = out.routed_layer_reconstruction()
        if on_features is not None:
            feature_acts = on_features(out.feature_acts.clone(), out)
            max_weight = out.router_weights.gather(-1, out.layer_index[..., None])
            edited = out.standardized.undo(sae.decode_standardized(feature_acts) / max_weight, out.layer_index)
        else:
            edited = recon
        values = edited + (clean - recon) if use_error_term else edited
    return SplicePlan(out.layer_index, values, out, feature_acts)


@contextmanager
def routed_splice(
    model: Any,
    sae: Any,
    *,
    use_error_term: bool = False,
    on_features: FeatureEdit | None = None,
    replacement: Literal["sae", "zero"] = "sae",
    positions: torch.Tensor | None = None,
    plan: SplicePlan | None = None,
) -> Iterator[list[SplicePlan]]:
    """Within the block, every forward of `model` is routed-spliced by `sae`.

    use_error_term: add back each token's SAE error at its routed layer, so outputs equal the clean model's
        while the plans record features (and `on_features` edits act as pure interventions).
    on_features(feature_acts, routed) -> feature_acts: edit features before decoding (steering, ablation).
    replacement="zero": zero-ablate each token's routed layer instead (the CE-recovered baseline).
    positions: bool [batch, pos]; only these positions are spliced, the others keep their clean activations
        (SAELens's `get_recons_loss` leaves special tokens such as BOS unspliced the same way: the SAE never
        trained on them, and a badly reconstructed attention-sink token corrupts every later position).
    plan: a plan made beforehand (`plan_from_routed`) from these very tokens' clean routing: no clean pass runs
        inside the forward, which may then also start at the first routed block (`model(resid, start_at_layer=..)`
        with the clean stream entering it). Every forward in the block must have the plan's [batch, pos].
    Yields the list of `SplicePlan`s, one per forward pass, for inspection.
    """
    check_spliceable(model, sae)
    if positions is not None and (not isinstance(positions, torch.Tensor) or positions.dtype != torch.bool):
        raise ValueError("positions must be a bool tensor [batch, pos] of the positions to splice")
    hooks = list(sae.cfg.hook_names)
    plans: list[SplicePlan] = [] if plan is None else [plan]
    state: dict[str, Any] = {"nested": False}

    def make_plan(model_input: Any, **forward_kwargs: Any) -> None:
        if state["nested"]:
            return
        state["nested"] = True
        try:
            acts, _, _ = routed_activations(model, model_input, hooks, **forward_kwargs)
        finally:
            state["nested"] = False
        plans.append(
            plan_splice(
                sae, acts, use_error_term=use_error_term, on_features=on_features, replacement=replacement
            )
        )

    def plan_hook(resid: torch.Tensor, hook: Any) -> None:
        make_plan(resid, start_at_layer=0)

    def bridge_plan_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        make_plan(args[0] if args else kwargs["input"])

    def kv_cache_guard(scores: torch.Tensor, hook: Any) -> None:
        if not state["nested"] and scores.shape[-1] != scores.shape[-2]:
            raise ValueError(
                "routed_splice cannot route a KV-cached forward (it sees only the new tokens); use "
                "model.generate(..., use_past_kv_cache=False) or sae_lens_routing.routed_generate"
            )

    def replace_hook(layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor | None]:
        def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
            if state["nested"]:
                return None
            current = plans[-1]
            if tuple(current.layer_index.shape) != tuple(act.shape[:2]):
                raise ValueError(
                    f"the splice plan was made for [batch, pos] = {tuple(current.layer_index.shape)} but this "
                    f"forward has {tuple(act.shape[:2])}; a given plan serves forwards of its own tokens only"
                )
            mask = current.layer_index == layer
            if positions is not None:
                if positions.shape != mask.shape:
                    raise ValueError(
                        f"positions has shape {tuple(positions.shape)} but this forward has [batch, pos] = "
                        f"{tuple(mask.shape)}"
                    )
                mask = mask & positions.to(mask.device)
            if not bool(mask.any()):
                return None
            act = act.clone()
            act[mask] = current.values[mask].to(act.dtype)
            return act

        return hook_fn

    # A bridge cannot start a forward from the residual stream: its clean pass reruns the forward's own input.
    bridge = plan is None and is_bridge(model)
    fwd_hooks: list[tuple[str, Callable[..., Any]]] = []
    if plan is None:
        fwd_hooks += [("blocks.0.attn.hook_attn_scores", kv_cache_guard)] + ([] if bridge else [(ENTRY_HOOK, plan_hook)])
    fwd_hooks += [(h, replace_hook(i)) for i, h in enumerate(hooks)]
    handle = model.register_forward_pre_hook(bridge_plan_hook, with_kwargs=True) if bridge else None
    try:
        with model.hooks(fwd_hooks=fwd_hooks):
            yield plans
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def routed_generate(
    model: Any,
    sae: Any,
    prompt: str | torch.Tensor,
    *,
    max_new_tokens: int = 20,
    on_features: FeatureEdit | None = None,
    use_error_term: bool = True,
    splice: bool = True,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Generate with the routed splice applied at every step (each step re-runs the whole sequence, so every
    generated token is routed and steered too). Returns (tokens [1, n], next-token logits of each step)."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt
    generator = torch.Generator(device="cpu").manual_seed(seed)
    step_logits: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        if splice:
            with routed_splice(model, sae, use_error_term=use_error_term, on_features=on_features):
                logits = model(tokens)
        else:
            logits = model(tokens)
        last = logits[:, -1].float().cpu()
        step_logits.append(last)
        if temperature <= 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator)
        tokens = torch.cat([tokens, nxt.to(tokens.device)], dim=1)
    return tokens, step_logits
