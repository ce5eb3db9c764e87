"""Dataclass configs for RouteSAE, in SAELens's style (see `sae_lens/saes/topk_sae.py`).

The routed hook points live in the config (`hook_names`) because they are part of what the SAE *is*:
the router's output dimension is `len(hook_names)`, and a saved SAE is useless without knowing which
residual-stream positions its router chooses between.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sae_lens.saes.sae import SAEConfig, TrainingSAEConfig
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


def validate_route_fields(cfg: Any) -> None:
    """Checks shared by the inference and training configs; each message names the field."""
    if not isinstance(cfg.k, int) or cfg.k < 1:
        raise ValueError(f"k must be a positive integer, got k={cfg.k!r}")
    if cfg.k > cfg.d_sae:
        raise ValueError(f"k must be <= d_sae, got k={cfg.k} > d_sae={cfg.d_sae}")
    hook_names = list(cfg.hook_names)
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
    if cfg.routing not in ROUTING_MODES:
        raise ValueError(f"routing must be one of {ROUTING_MODES}, got routing={cfg.routing!r}")
    if cfg.router_input not in ROUTER_INPUTS:
        raise ValueError(
            f"router_input must be one of {ROUTER_INPUTS}, got router_input={cfg.router_input!r}"
        )
    if not cfg.standardize_eps > 0:
        raise ValueError(f"standardize_eps must be > 0, got {cfg.standardize_eps!r}")
    if cfg.normalize_activations != "none":
        raise ValueError(
            "normalize_activations must be 'none' for RouteSAE: activations are already standardised per "
            f"token (see `standardize`), got normalize_activations={cfg.normalize_activations!r}"
        )
    if cfg.reshape_activations != "none":
        raise ValueError(f"reshape_activations must be 'none' for RouteSAE, got {cfg.reshape_activations!r}")
    cfg.hook_names = hook_names


def validate_training_fields(cfg: Any) -> None:
    """Checks of the training-only recipe fields; each message names the field."""
    window = cfg.dead_feature_window_tokens
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"dead_feature_window_tokens must be a positive integer or None, got {window!r}")
    every = cfg.unit_norm_decoder_every
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"unit_norm_decoder_every must be an integer >= 0 (0 = never), got {every!r}")
    if not cfg.aux_loss_coefficient >= 0:
        raise ValueError(f"aux_loss_coefficient must be >= 0, got {cfg.aux_loss_coefficient!r}")
    if cfg.decoder_init_norm is not None and not cfg.decoder_init_norm > 0:
        raise ValueError(f"decoder_init_norm must be > 0 or None, got {cfg.decoder_init_norm!r}")


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
class RouteSAEConfig(_RoutedConfigMixin, SAEConfig):
    """Inference config of a routed SAE (architecture ``"routesae"``)."""

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
    rescale_acts_by_decoder_norm: bool = False
    """Treat the decoder as unit-norm by rescaling activations (folded away when a training SAE is saved)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_route_fields(self)


@dataclass
class RouteTrainingSAEConfig(_RoutedConfigMixin, TrainingSAEConfig):
    """Training config of a routed SAE; pass it as ``sae=`` of a ``LanguageModelSAERunnerConfig``."""

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
    rescale_acts_by_decoder_norm: bool = True
    """SAELens's way of keeping decoder rows unit-norm: TopK selects on pre-acts times decoder norms and
    decoding divides by them, so the norms cannot drift the selection; folded into the weights on save."""
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
    """Decode the k active latents with a gather instead of a dense [batch, d_sae] @ W_dec."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_route_fields(self)
        validate_training_fields(self)
