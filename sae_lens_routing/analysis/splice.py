"""Routed splicing: each token's residual stream is replaced, at the one layer it is routed to, by the SAE's
reconstruction. A clean pass inside each forward routes the tokens before the earliest layer is replaced; a
KV-cached forward sees only new tokens, which cannot be routed, so it is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch

from sae_lens_routing.saes.route_sae import RoutedOutput
from sae_lens_routing.saes.routed_activations import check_hooks_in_model, is_bridge, routed_activations

FeatureEdit = Callable[[torch.Tensor, RoutedOutput], torch.Tensor]
ENTRY_HOOK = "blocks.0.hook_resid_pre"


@dataclass
class SplicePlan:
    """What the clean pass decided for the current forward: per token, its layer and replacement value."""

    layer_index: torch.Tensor  # [batch, pos]
    values: torch.Tensor  # [batch, pos, d_in], raw space
    feature_acts: torch.Tensor  # [batch, pos, d_sae] after `on_features`

    def to(self, dtype: torch.dtype) -> SplicePlan:
        return SplicePlan(self.layer_index, self.values.to(dtype), self.feature_acts)


def check_spliceable(model: Any, sae: Any) -> None:
    """A soft-routed SAE reconstructs a mix of layers (no single one to replace); the SAE runs inside the
    model's forward, so both must share a device ('cuda' and 'cuda:0' are one when 0 is current)."""
    check_hooks_in_model(model, [*sae.cfg.hook_names, ENTRY_HOOK])
    model_device = next(model.parameters()).device
    devices = [torch.device(d) for d in (model_device, sae.device)]
    current = torch.cuda.current_device() if any(d.type == "cuda" for d in devices) else None
    same = len({(d.type, current if d.type == "cuda" and d.index is None else d.index) for d in devices}) == 1
    if sae.cfg.routing != "hard" or not same:
        raise ValueError(
            f"routed splicing needs routing='hard', got routing={sae.cfg.routing!r}"
            if sae.cfg.routing != "hard"
            else f"sae is on {sae.device} but the model is on {model_device}: routed splicing runs the SAE "
            f"inside the model's forward; move one of them, e.g. sae.to({str(model_device)!r})"
        )


@torch.no_grad()
def plan_splice(sae: Any, routed_acts: torch.Tensor, **plan_kwargs: Any) -> SplicePlan:
    """A plan (`plan_from_routed`'s keywords) from clean activations [batch, pos, L, d_in], in their dtype."""
    out = sae.forward_routed(routed_acts.to(sae.dtype))
    return plan_from_routed(sae, out, **plan_kwargs).to(routed_acts.dtype)


@torch.no_grad()
def plan_from_routed(
    sae: Any, out: RoutedOutput, *, use_error_term: bool = False, on_features: FeatureEdit | None = None,
    replacement: Literal["sae", "zero"] = "sae",
) -> SplicePlan:  # fmt: skip
    """A plan from a routing already computed: one `forward_routed` serves every plan of the same tokens."""
    clean, feature_acts = out.routed_layer_input(), out.feature_acts
    if replacement == "zero":
        return SplicePlan(out.layer_index, torch.zeros_like(clean), feature_acts)
    values = recon = out.routed_layer_reconstruction()
    if on_features is not None:
        feature_acts = on_features(out.feature_acts.clone(), out)
        weight = out.router_weights.gather(-1, out.layer_index[..., None])
        values = out.standardized.undo(sae.decode_standardized(feature_acts) / weight, out.layer_index)
    return SplicePlan(out.layer_index, values + (clean - recon) if use_error_term else values, feature_acts)


@contextmanager
def routed_splice(
    model: Any, sae: Any, *, use_error_term: bool = False, on_features: FeatureEdit | None = None,
    replacement: Literal["sae", "zero"] = "sae", positions: torch.Tensor | None = None,
    plan: SplicePlan | None = None,
) -> Iterator[list[SplicePlan]]:  # fmt: skip
    """Within the block, every forward of `model` is routed-spliced by `sae` (yields each forward's plan);
    `use_error_term` keeps outputs clean so `on_features` edits act alone; only `positions` (bool [batch,
    pos]) are spliced, as SAELens leaves BOS clean; a given `plan` (maker-checked) skips the clean pass."""
    if plan is None:
        check_spliceable(model, sae)
    hooks = list(sae.cfg.hook_names)
    plans: list[SplicePlan] = [] if plan is None else [plan]
    nested = [False]  # the clean pass's own forward is not spliced

    def make_plan(model_input: Any, **forward_kwargs: Any) -> None:
        if nested[0]:
            return
        nested[0] = True
        try:
            acts, _, _ = routed_activations(model, model_input, hooks, **forward_kwargs)
        finally:
            nested[0] = False
        edits = {"use_error_term": use_error_term, "on_features": on_features, "replacement": replacement}
        plans.append(plan_splice(sae, acts, **edits))

    def kv_cache_guard(scores: torch.Tensor, hook: Any) -> None:
        if not nested[0] and scores.shape[-1] != scores.shape[-2]:
            raise ValueError(
                "routed_splice cannot route a KV-cached forward (it sees only the new tokens); use "
                "model.generate(..., use_past_kv_cache=False) or sae_lens_routing.routed_generate"
            )

    def replace_hook(layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor | None]:
        def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
            if nested[0]:
                return None
            mask = plans[-1].layer_index == layer
            if positions is not None:
                if positions.dtype != torch.bool or positions.shape != mask.shape:
                    raise ValueError(
                        f"positions has shape {tuple(positions.shape)} and dtype {positions.dtype}; it must "
                        f"be a bool tensor [batch, pos] = {tuple(mask.shape)} of the positions to splice"
                    )
                mask = mask & positions.to(mask.device)
            if not bool(mask.any()):
                return None
            act = act.clone()
            act[mask] = plans[-1].values[mask].to(act.dtype)
            return act

        return hook_fn

    # a bridge cannot start a forward from the residual stream: its clean pass reruns the forward's input
    bridge = plan is None and is_bridge(model)
    fwd_hooks: list[tuple[str, Callable[..., Any]]] = [(h, replace_hook(i)) for i, h in enumerate(hooks)]
    if plan is None:
        fwd_hooks.append(("blocks.0.attn.hook_attn_scores", kv_cache_guard))
    if plan is None and not bridge:
        fwd_hooks.append((ENTRY_HOOK, lambda resid, hook: make_plan(resid, start_at_layer=0)))
    bridge_hook = lambda module, args, kwargs: make_plan(args[0] if args else kwargs["input"])  # noqa: E731
    handle = model.register_forward_pre_hook(bridge_hook, with_kwargs=True) if bridge else None
    try:
        with model.hooks(fwd_hooks=fwd_hooks):
            yield plans
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def routed_generate(
    model: Any, sae: Any, prompt: str | torch.Tensor, *, max_new_tokens: int = 20,
    on_features: FeatureEdit | None = None, use_error_term: bool = True, splice: bool = True,
    temperature: float = 0.0, seed: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """Generate with the routed splice at every step (re-running the whole sequence, so generated tokens are
    routed and steered too). Returns (tokens [1, n], next-token logits of each step)."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt
    generator = torch.Generator(device="cpu").manual_seed(seed)
    step_logits: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        spliced = routed_splice(model, sae, use_error_term=use_error_term, on_features=on_features)
        with spliced if splice else nullcontext():
            last = model(tokens)[:, -1].float().cpu()
        step_logits.append(last)
        if temperature <= 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator)
        tokens = torch.cat([tokens, nxt.to(tokens.device)], dim=1)
    return tokens, step_logits
