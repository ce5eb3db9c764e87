"""RouteSAE configs: SAELens's TopK configs plus the routing fields, checked once in `__post_init__`.

`hook_names` belong to the config: the router's output size is L = len(hook_names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAEConfig
from sae_lens.util import extract_layer_from_tlens_hook_name as hook_layer
from typing_extensions import override

from sae_lens_routing.saes.sae_lens_guards import no_single_hook_layer_error

__all__ = ["ARCHITECTURE", "ROUTER_INPUTS", "ROUTING_MODES", "IntegrityError", "hook_layer"]

ARCHITECTURE = "routesae"
ROUTING_MODES = ("hard", "soft")
ROUTER_INPUTS = ("sum", "mean")


class IntegrityError(ValueError):
    """A saved SAE is missing a file, is truncated or corrupted, or does not match its config."""


def _describe(value: Any) -> str:
    return f"{value!r} ({'a string' if isinstance(value, str) else type(value).__name__})"


def _field_problem(cfg: Any, name: str, kind: str, low: float = 1, expected: str = "") -> str | None:
    """What is wrong with one int/number/bool field, or None (bool is no int: `k=True` would mean k=1)."""
    value = getattr(cfg, name)
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    ok = {
        "int": isinstance(value, int) and is_num and value >= low,
        "int?": value is None or (isinstance(value, int) and is_num and value >= low),
        "num": is_num and value >= low and not math.isnan(value),
        "pos": is_num and value > 0,
        "pos?": value is None or (is_num and value > 0),
        "bool": isinstance(value, bool),
    }[kind]
    expected = expected or {
        "int": "a positive integer" if low == 1 else "an integer >= 0",
        "int?": "a positive integer or None",
        "num": "a number >= 0",
        "pos": "a number > 0",
        "pos?": "a number > 0 or None",
        "bool": "a bool (True/False)",
    }[kind]
    return None if ok else f"{name} must be {expected}, got {name}={_describe(value)}"


def _hook_names_problem(hooks: Any) -> str | None:
    if isinstance(hooks, str) or not isinstance(hooks, list | tuple):
        got = f"a string {hooks!r}" if isinstance(hooks, str) else _describe(hooks)
        return f"hook_names must be a list of hook names, got {got}"
    layers = [hook_layer(h) if isinstance(h, str) else None for h in hooks]
    if len(hooks) < 2:
        return f"hook_names must list at least 2 routed hook points, got {list(hooks)!r}"
    if not all(isinstance(h, str) and h for h in hooks):
        return f"hook_names must be non-empty strings, got {list(hooks)!r}"
    if len(set(hooks)) < len(hooks):
        return f"hook_names must not repeat a hook point, got {list(hooks)!r}"
    if None not in layers and layers != sorted(layers):  # type: ignore[type-var]
        return f"hook_names must be in layer order (earliest first), got {list(hooks)!r}"
    return None


def validate_route_fields(cfg: Any, training: bool = False) -> None:
    """The one meaning check of a routed config; the message names the field and what it expects."""
    checks: list[str | None] = [_field_problem(cfg, n, "int") for n in ("d_in", "d_sae", "k")]
    checks += [
        _hook_names_problem(cfg.hook_names),
        _field_problem(cfg, "standardize_eps", "pos"),
        *(_field_problem(cfg, n, "bool") for n in ("standardize", "topk_relu", "rescale_acts_by_decoder_norm")),
        _field_problem(cfg, "apply_b_dec_to_input", "bool"),
    ]
    if training:
        checks += [
            _field_problem(cfg, "dead_feature_window_tokens", "int?"),
            _field_problem(cfg, "unit_norm_decoder_every", "int", 0, "an integer >= 0 (0 = never)"),
            _field_problem(cfg, "aux_loss_coefficient", "num", low=0),
            _field_problem(cfg, "decoder_init_norm", "pos?"),
            _field_problem(cfg, "use_sparse_activations", "bool"),
            _field_problem(cfg, "end_to_end_tokens", "int", 0, "an integer >= 0 (0 = no end-to-end phase)"),
            _field_problem(cfg, "end_to_end_lr", "pos"),
            _field_problem(cfg, "end_to_end_mse_coefficient", "num", low=0),
        ]
    if not checks[2] and not checks[1]:
        checks.append(f"k must be <= d_sae, got k={cfg.k} > d_sae={cfg.d_sae}" if cfg.k > cfg.d_sae else None)
    for name, allowed in (("routing", ROUTING_MODES), ("router_input", ROUTER_INPUTS)):
        value = getattr(cfg, name)
        checks.append(None if value in allowed else f"{name} must be one of {allowed}, got {name}={value!r}")
    for name in ("normalize_activations", "reshape_activations"):
        value = getattr(cfg, name)
        checks.append(None if value == "none" else f"{name} must be 'none' for RouteSAE, got {value!r}")
    problem = next((c for c in checks if c), None)
    if problem:
        raise ValueError(problem)
    cfg.hook_names = list(cfg.hook_names)


class CheckedState(dict):  # type: ignore[type-arg]
    """Weights a plugin loader checked against their file: the model does not scan them again."""


def check_route_state_dict(
    state: Mapping[str, torch.Tensor], d_in: int, d_sae: int, n_layers: int, source: str = "RouteSAE weights"
) -> None:
    """Keys, shapes and values of RouteSAE weights, scanned once per load: SAELens loads NaN or an all-zero
    decoder silently, and the first forward then gives NaN or a constant."""
    expected = {
        "W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
        "W_router": (d_in, n_layers),
    }  # fmt: skip
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k, shape in expected.items() if k in state and tuple(state[k].shape) != shape]
    problem = None
    if missing or extra:
        problem = f"RouteSAE weights must be exactly {sorted(expected)}; missing {missing}, unexpected {extra}"
    elif wrong:
        k = wrong[0]
        problem = (
            f"{k} has shape {tuple(state[k].shape)}, but the config expects {expected[k]} "
            f"(d_in={d_in}, d_sae={d_sae}, L=len(hook_names)={n_layers})"
        )
    elif bad := {k: n for k, v in state.items() if (n := int((~torch.isfinite(v)).sum()))}:
        k, n = next(iter(bad.items()))
        problem = f"{k} has {n} non-finite value{'s' if n > 1 else ''} (NaN/Inf)"
    elif not bool(state["W_dec"].any()):
        problem = "W_dec is all zeros: not a trained RouteSAE"
    if problem:
        raise IntegrityError(f"{source}: {problem}")


class _RoutedConfigMixin:
    """What both routed configs answer the same way: L, the refused single hook layer, the architecture."""

    hook_names: list[str]

    @property
    def n_layers(self) -> int:
        return len(self.hook_names)

    @property
    def hook_layer(self) -> int:
        """Refused: sae-dashboard's NeuronpediaRunner asks for one to build a single-layer dashboard."""
        raise no_single_hook_layer_error(self.hook_names)

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


@dataclass
class RouteSAEConfig(_RoutedConfigMixin, TopKSAEConfig):
    """Inference config of a routed SAE (architecture ``"routesae"``)."""

    k: int = 64
    hook_names: list[str] = field(default_factory=list)
    """Routed hook points in layer order; L = len(hook_names) >= 2."""
    routing: Literal["hard", "soft"] = "hard"
    """hard: one layer per token, scaled by its router weight (the paper's method); soft: the weighted sum."""
    router_input: Literal["sum", "mean"] = "sum"
    """How the L standardised layers are pooled into the router's input."""
    standardize: bool = True
    """Standardise each layer per token, (h - mean) / (std + eps), as the paper does."""
    standardize_eps: float = 1e-6
    topk_relu: bool = True
    """ReLU the kept TopK values (SAELens does; the official RouteSAE does not)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_route_fields(self)


@dataclass
class RouteTrainingSAEConfig(_RoutedConfigMixin, TopKTrainingSAEConfig):
    """Training config of a routed SAE; pass it as ``sae=`` of a ``LanguageModelSAERunnerConfig``."""

    k: int = 64
    hook_names: list[str] = field(default_factory=list)
    """Routed hook points in layer order; `paper_layers(model)` gives the paper's choice."""
    routing: Literal["hard", "soft"] = "hard"
    router_input: Literal["sum", "mean"] = "sum"
    standardize: bool = True
    standardize_eps: float = 1e-6
    topk_relu: bool = True
    decoder_init_norm: float | None = 1.0
    """Decoder row norm at init, encoder tied to its transpose (the official init; SAELens's 0.1 trains worse)."""
    aux_loss_coefficient: float = 1 / 32
    """Weight of SAELens's TopK dead-latent aux loss, normalised like the main loss (the paper uses none)."""
    dead_feature_window_tokens: int | None = 80_000
    """Tokens a latent may stay silent before it counts as dead; None: the runner's `dead_feature_window`."""
    unit_norm_decoder_every: int = 0
    """Project decoder rows to unit norm every N optimizer steps (the official code: 10); 0 = never."""
    use_sparse_activations: bool = False
    """Decode the k active latents with a gather instead of a dense matmul."""
    end_to_end_tokens: int = 0
    """Tokens of a final phase training through the routed splice on the model's KL (0 = none)."""
    end_to_end_lr: float = 1e-4
    end_to_end_mse_coefficient: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_route_fields(self, training=True)
