"""Dataclass configs for RouteSAE: SAELens's TopK configs (`sae_lens/saes/topk_sae.py`) plus the routing fields.

The routed hook points live in the config (`hook_names`) because they are part of what the SAE *is*:
the router's output dimension is `len(hook_names)`, and a saved SAE is useless without knowing which
residual-stream positions its router chooses between.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAEConfig
from typing_extensions import override

from sae_lens_routing.saes.sae_lens_guards import no_single_hook_layer_error

ARCHITECTURE = "routesae"
ROUTING_MODES = ("hard", "soft")
ROUTER_INPUTS = ("sum", "mean")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook_name: str) -> int | None:
    """Block index of a TransformerLens hook name (`blocks.7.hook_resid_post` -> 7), else None."""
    m = _BLOCK_RE.match(hook_name)
    return int(m.group(1)) if m else None


def _type_name(value: Any) -> str:
    return "a string" if isinstance(value, str) else type(value).__name__


def check_int(cfg: Any, name: str, minimum: int = 1, expected: str = "a positive integer") -> None:
    """An integer field (bool is refused: `k=True` would silently mean k=1)."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be {expected}, got {name}={value!r} ({_type_name(value)})")


def check_number(cfg: Any, name: str, positive: bool = False, allow_none: bool = False) -> None:
    """A float field: a real number (int or float, not bool or str), > 0 if `positive`, else >= 0."""
    value = getattr(cfg, name)
    if value is None and allow_none:
        return
    bound = "> 0" if positive else ">= 0"
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (value > 0 if positive else value >= 0):
        expected = f"a number {bound}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {name}={value!r} ({_type_name(value)})")


def check_bools(cfg: Any, *names: str) -> None:
    """Bool fields: a string such as "false" would silently be truthy."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool (True/False), got {name}={value!r} ({_type_name(value)})")


def validate_hook_names(hook_names: Any) -> list[str]:
    """A list (or tuple) of at least 2 distinct hook names in layer order."""
    if isinstance(hook_names, str):
        raise ValueError(
            f"hook_names must be a list of hook names, got a string {hook_names!r}; RouteSAE routes between "
            f"at least 2 hook points, e.g. hook_names=[{hook_names!r}, ...]"
        )
    if not isinstance(hook_names, list | tuple):
        raise ValueError(f"hook_names must be a list of hook names, got {hook_names!r} ({_type_name(hook_names)})")
    hook_names = list(hook_names)
    if len(hook_names) < 2:
        raise ValueError(
            f"hook_names must list at least 2 routed hook points (RouteSAE routes between layers), "
            f"got {len(hook_names)}: {hook_names!r}"
        )
    if not all(isinstance(h, str) and h for h in hook_names):
        raise ValueError(f"hook_names must be non-empty strings, got {hook_names!r}")
    dupes = sorted({h for h in hook_names if hook_names.count(h) > 1})
    if dupes:
        raise ValueError(f"hook_names must not repeat a hook point, duplicated: {dupes!r}")
    layers = [hook_layer(h) for h in hook_names]
    if all(layer is not None for layer in layers) and layers != sorted(layers):
        raise ValueError(f"hook_names must be in layer order (earliest first), got {hook_names!r}")
    return hook_names


def validate_route_fields(cfg: Any) -> None:
    """Checks shared by the inference and training configs; each message names the field and what it expects."""
    for name in ("d_in", "d_sae", "k"):
        check_int(cfg, name)
    if cfg.k > cfg.d_sae:
        raise ValueError(f"k must be <= d_sae, got k={cfg.k} > d_sae={cfg.d_sae}")
    cfg.hook_names = validate_hook_names(cfg.hook_names)
    if cfg.routing not in ROUTING_MODES:
        raise ValueError(f"routing must be one of {ROUTING_MODES}, got routing={cfg.routing!r}")
    if cfg.router_input not in ROUTER_INPUTS:
        raise ValueError(
            f"router_input must be one of {ROUTER_INPUTS}, got router_input={cfg.router_input!r}"
        )
    check_number(cfg, "standardize_eps", positive=True)
    check_bools(cfg, "standardize", "topk_relu", "rescale_acts_by_decoder_norm", "apply_b_dec_to_input")
    if cfg.normalize_activations != "none":
        raise ValueError(
            "normalize_activations must be 'none' for RouteSAE: activations are already standardised per "
            f"token (see `standardize`), got normalize_activations={cfg.normalize_activations!r}"
        )
    if cfg.reshape_activations != "none":
        raise ValueError(f"reshape_activations must be 'none' for RouteSAE, got {cfg.reshape_activations!r}")


def validate_training_fields(cfg: Any) -> None:
    """Checks of the training-only recipe fields; each message names the field and what it expects."""
    if cfg.dead_feature_window_tokens is not None:
        check_int(cfg, "dead_feature_window_tokens", expected="a positive integer or None")
    check_int(cfg, "unit_norm_decoder_every", minimum=0, expected="an integer >= 0 (0 = never)")
    check_number(cfg, "aux_loss_coefficient")
    check_number(cfg, "decoder_init_norm", positive=True, allow_none=True)
    check_bools(cfg, "use_sparse_activations")
    check_int(cfg, "end_to_end_tokens", minimum=0, expected="an integer >= 0 (0 = no end-to-end phase)")
    check_number(cfg, "end_to_end_lr", positive=True)
    check_number(cfg, "end_to_end_mse_coefficient")


class _RoutedConfigMixin:
    """What both routed configs answer the same way: L, the missing single hook layer, the architecture."""

    hook_names: list[str]

    @property
    def n_layers(self) -> int:
        """Number of routed layers, L."""
        return len(self.hook_names)

    @property
    def hook_layer(self) -> int:
        """Refused: a routed SAE has no single hook layer. SAELens 6 configs have no `hook_layer`; sae-dashboard's
        NeuronpediaRunner asks for one (before loading the model) to build a single-layer dashboard."""
        raise no_single_hook_layer_error(self.hook_names)

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


@dataclass
class RouteSAEConfig(_RoutedConfigMixin, TopKSAEConfig):
    """Inference config of a routed SAE (architecture ``"routesae"``); `rescale_acts_by_decoder_norm` is TopK's."""

    k: int = 64
    """Latents kept per token by TopK."""
    hook_names: list[str] = field(default_factory=list)
    """Routed hook points in layer order; L = len(hook_names) >= 2 (router output size)."""
    routing: Literal["hard", "soft"] = "hard"
    """hard: each token's SAE input is one layer's activation times its router weight (the paper's
    main method); soft: the router-weighted sum of all L layers."""
    router_input: Literal["sum", "mean"] = "sum"
    """How the L standardised layers are pooled into the router's input."""
    standardize: bool = True
    """Standardise each layer's activation per token, (h - mean) / (std + eps), as the paper does."""
    standardize_eps: float = 1e-6
    """Epsilon added to the (unbiased) per-token std; 1e-6 in the official code."""
    topk_relu: bool = True
    """Apply ReLU to the k kept pre-activations (SAELens's TopK does; the official RouteSAE does not)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_route_fields(self)


@dataclass
class RouteTrainingSAEConfig(_RoutedConfigMixin, TopKTrainingSAEConfig):
    """Training config of a routed SAE; pass it as ``sae=`` of a ``LanguageModelSAERunnerConfig``.
    `rescale_acts_by_decoder_norm` (default on: TopK selects on pre-acts times decoder norms, so drifting norms
    cannot change the selection; folded into the weights on save) is TopK's."""

    k: int = 64
    """Latents kept per token by TopK."""
    hook_names: list[str] = field(default_factory=list)
    """Routed hook points in layer order; L = len(hook_names) >= 2. `paper_layers(model)` gives the
    paper's choice (blocks n//4-1 .. 3n//4-1, hook_resid_post)."""
    routing: Literal["hard", "soft"] = "hard"
    """hard (the paper's main method) or soft routing."""
    router_input: Literal["sum", "mean"] = "sum"
    """How the L standardised layers are pooled into the router's input."""
    standardize: bool = True
    """Standardise each layer's activation per token, as the paper does."""
    standardize_eps: float = 1e-6
    """Epsilon added to the per-token std (official: 1e-6)."""
    topk_relu: bool = True
    """Apply ReLU to the kept TopK values (SAELens: yes; official RouteSAE: no)."""
    decoder_init_norm: float | None = 1.0
    """Norm of the decoder rows at init, encoder tied to the decoder's transpose (the official code's tied,
    unit-norm init). SAELens's TopK default, 0.1, makes every Adam step ~10x larger relative to the weights;
    on the recipe benchmark it left the SAE with 2.4x the silent latents and twice the KL (benchmarks/recipe.py)."""
    aux_loss_coefficient: float = 1 / 32
    """Weight of SAELens's TopK auxiliary dead-latent loss (dead latents learn to reconstruct the residual),
    normalised like the main loss. The paper trains without one (`recipes.OFFICIAL_RECIPE` sets 0)."""
    dead_feature_window_tokens: int | None = 80_000
    """Tokens a latent may stay silent before the trainer counts it dead (feeding the aux loss and the dead
    count). None falls back to the runner's `dead_feature_window` (in steps, 1000 by default: at 4096-token
    steps a latent must be silent for 4M tokens, so in a shorter run the aux loss never fires)."""
    unit_norm_decoder_every: int = 0
    """Project decoder rows to unit norm after every N-th optimizer step (the official code does every 10,
    with `rescale_acts_by_decoder_norm` off); 0 = never."""
    use_sparse_activations: bool = False
    """Decode the k active latents with a gather (embedding_bag) instead of a dense [batch, d_sae] @ W_dec
    (SAELens's TopK option builds a sparse COO tensor instead)."""
    end_to_end_tokens: int = 0
    """Tokens of a short end-to-end phase after the main one (0 = none): the SAE and router train through the
    routed splice on the model's KL plus the main loss (`training/end_to_end.py`). It optimises what KL and delta
    CE measure, which the routed-input NormMSE does not; each of its tokens costs a full model forward and a
    backward from the first routed block. Needs the live model (not `use_cached_activations`)."""
    end_to_end_lr: float = 1e-4
    """Adam learning rate of the end-to-end phase, decaying linearly to 0 over it."""
    end_to_end_mse_coefficient: float = 1.0
    """Weight of the main (normalised MSE) loss beside the KL in the end-to-end phase."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_route_fields(self)
        validate_training_fields(self)
