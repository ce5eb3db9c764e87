"""Routed splicing and steering: each token's residual replaced at its routed layer by the reconstruction."""

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch

from sae_lens_routing.saes.route_sae import RoutedOutput
from sae_lens_routing.saes.routed_activations import check_hooks_in_model, is_bridge, routed_activations

FeatureEdit = Callable[[torch.Tensor, RoutedOutput], torch.Tensor]
ENTRY_HOOK = "blocks.0.hook_resid_pre"


@dataclass
class SplicePlan:
    """The clean pass's decision per token: its layer and replacement (cast to the model's dtype at use)."""
    layer_index: torch.Tensor  # [batch, pos]
    values: torch.Tensor  # [batch, pos, d_in], raw space
    feature_acts: torch.Tensor  # [batch, pos, d_sae] after `on_features`


def check_spliceable(model: Any, sae: Any) -> None:
    """Hard routing (a soft mix has no single layer to replace) and one device."""
    check_hooks_in_model(model, [*sae.cfg.hook_names, ENTRY_HOOK])
    model_device = next(model.parameters()).device
    same = model_device == torch.empty(0, device=sae.device).device  # resolves a bare 'cuda' to its index
    if sae.cfg.routing != "hard" or not same:
        raise ValueError(
            f"routed splicing needs routing='hard', got routing={sae.cfg.routing!r}"
            if sae.cfg.routing != "hard"
            else f"sae is on {sae.device} but the model is on {model_device}: routed splicing runs the SAE "
            f"inside the model's forward; move one of them, e.g. sae.to({str(model_device)!r})"
        )


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
    """Every forward in the block is routed-spliced (at `positions`); a given `plan` skips the clean pass."""
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
        plans.append(plan_from_routed(sae, sae.forward_routed(acts.to(sae.dtype)), **edits))

    def check_forward(scores: torch.Tensor, hook: Any) -> None:  # once per forward, before any splice
        shape, cached = (scores.shape[0], scores.shape[-1]), scores.shape[-1] != scores.shape[-2]
        bad = positions is not None and (positions.dtype != torch.bool or tuple(positions.shape) != shape)
        if not nested[0] and (cached or bad):
            raise ValueError(
                "routed_splice cannot route a KV-cached forward (it sees only the new tokens); use "
                "model.generate(..., use_past_kv_cache=False) or sae_lens_routing.routed_generate"
                if cached
                else f"positions has shape {tuple(positions.shape)} and dtype {positions.dtype}; it must "
                f"be a bool tensor [batch, pos] = {shape}"
            )

    def replace(act: torch.Tensor, hook: Any, layer: int) -> torch.Tensor | None:
        if nested[0]:
            return None
        mask = plans[-1].layer_index == layer
        if positions is not None:
            mask = mask & positions.to(mask.device)
        act = act.clone()
        act[mask] = plans[-1].values[mask].to(act.dtype)
        return act

    # a bridge cannot start a forward from the residual stream: its clean pass reruns the forward's input
    bridge = plan is None and is_bridge(model)
    fwd_hooks: list[tuple[str, Any]] = [(h, partial(replace, layer=i)) for i, h in enumerate(hooks)]
    if plan is None:
        fwd_hooks.append(("blocks.0.attn.hook_attn_scores", check_forward))
    if plan is None and not bridge:
        fwd_hooks.append((ENTRY_HOOK, lambda resid, hook: make_plan(resid, start_at_layer=0)))
    with ExitStack() as stack, model.hooks(fwd_hooks=fwd_hooks):
        if bridge:
            hook = lambda module, args, kwargs: make_plan(args[0] if args else kwargs["input"])  # noqa: E731
            stack.callback(model.register_forward_pre_hook(hook, with_kwargs=True).remove)
        yield plans


@torch.no_grad()
def routed_generate(
    model: Any, sae: Any, prompt: str | torch.Tensor, *, max_new_tokens: int = 20,
    on_features: FeatureEdit | None = None, use_error_term: bool = True, splice: bool = True,
    temperature: float = 0.0, seed: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """(tokens [1, n], step logits); each step reruns the whole sequence, so new tokens are routed too."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt
    generator = torch.Generator(device="cpu").manual_seed(seed)
    step_logits: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        spliced = routed_splice(model, sae, use_error_term=use_error_term, on_features=on_features)
        with spliced if splice else nullcontext():
            last = model(tokens)[:, -1].float().cpu()
        step_logits.append(last)
        nxt = last.argmax(-1, keepdim=True) if temperature <= 0 else torch.multinomial(
            torch.softmax(last / temperature, -1), 1, generator=generator)
        tokens = torch.cat([tokens, nxt.to(tokens.device)], dim=1)
    return tokens, step_logits


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
    """Unsteered and steered continuations (error term kept, so they differ by the steering alone)."""
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
