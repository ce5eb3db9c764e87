"""RouteSAEs from SAELens's unchanged runner: `with routed_model(model, hooks):` on `stock_runner_config`."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

from sae_lens_routing.saes.config import RouteSAEConfig, RouteTrainingSAEConfig, hook_layer
from sae_lens_routing.saes.route_sae import RouteTrainingSAE
from sae_lens_routing.saes.routed_activations import PSEUDO_HOOK, routed_hook_point
from sae_lens_routing.training.validation import refuse, validate_route_config

STACKED_ARCHITECTURE = "routesae_stacked"


def routed_hook_name(hook_names: Sequence[str]) -> str:
    """`blocks.N.hook_resid_routed` for routed hooks whose last block is N."""
    layers = [hook_layer(h) for h in hook_names]
    refuse([(not layers or None in layers)
            and f"hook_names must all be inside transformer blocks (blocks.N.*), got {hook_names}"])
    return f"blocks.{max(layers)}.{PSEUDO_HOOK}"  # type: ignore[type-var]


@dataclass
class StackedRouteTrainingSAEConfig(RouteTrainingSAEConfig):
    """A `RouteTrainingSAEConfig` whose `d_in` is the stacked width L*d_in of SAELens's single-hook store."""

    @classmethod
    def architecture(cls) -> str:
        return STACKED_ARCHITECTURE

    def get_inference_config_class(self) -> type[RouteSAEConfig]:
        return RouteSAEConfig

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse([self.d_in % len(self.hook_names) and "d_in must be the stacked width len(hook_names) * "
                f"d_layer, a multiple of {len(self.hook_names)}, got {self.d_in}"])

    @classmethod
    def from_route_config(cls, cfg: RouteTrainingSAEConfig) -> StackedRouteTrainingSAEConfig:
        data = {**cfg.to_dict(), "d_in": cfg.d_in * len(cfg.hook_names), "architecture": STACKED_ARCHITECTURE}
        return cls.from_dict(data)


class StackedRouteTrainingSAE(RouteTrainingSAE):
    """A `RouteTrainingSAE` (per-layer `d_in`) whose training rows arrive as [batch, L*d_in]."""

    def __init__(self, cfg: RouteTrainingSAEConfig, use_error_term: bool = False):
        if isinstance(cfg, StackedRouteTrainingSAEConfig):  # the per-layer config of the same SAE
            per_layer = {**cfg.to_dict(), "d_in": cfg.d_in // len(cfg.hook_names), "architecture": "routesae"}
            cfg = RouteTrainingSAEConfig.from_dict(per_layer)
        super().__init__(cfg, use_error_term)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x = step_input.sae_in
        n_layers, d_in = len(self.cfg.hook_names), self.cfg.d_in
        if x.shape[-1] == n_layers * d_in:
            step_input = dataclasses.replace(step_input, sae_in=x.reshape(*x.shape[:-1], n_layers, d_in))
        return super().training_forward_pass(step_input)

    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        """Every save (checkpoint or inference) records the real last routed hook, not the pseudo hook."""
        meta = self.cfg.metadata
        if meta.hook_name is None or meta.hook_name.endswith(PSEUDO_HOOK):
            meta.hook_name = self.cfg.hook_names[-1]
        meta.hook_names = list(self.cfg.hook_names)
        super().process_state_dict_for_saving(state_dict)


def stock_runner_config(cfg: LanguageModelSAERunnerConfig[Any]) -> LanguageModelSAERunnerConfig[Any]:
    """A `RouteSAETrainingRunner` config, validated as that runner would, rewritten for the stock runner."""
    validate_route_config(cfg)
    refuse([cfg.use_cached_activations and "use_cached_activations: SAELens's single-hook cache reader "
            "cannot serve routed rows; train from a routed cache with RouteSAETrainingRunner"])
    # SAELens's trainer clips at 1.0 and has no step hook: the rules only our trainer and runner apply go
    subset = {"max_grad_norm": 1.0, "unit_norm_decoder_every": 0, "end_to_end_tokens": 0}
    if dropped := {k: getattr(cfg.sae, k) for k, v in subset.items() if getattr(cfg.sae, k) != v}:
        warnings.warn(f"SAELens's own runner cannot apply {dropped}; it trains with {subset} (saved in the "
                      "cfg). RouteSAETrainingRunner or `python -m sae_lens_routing train` runs the recipe",
                      stacklevel=2)  # fmt: skip
    out = dataclasses.replace(
        cfg,
        sae=StackedRouteTrainingSAEConfig.from_route_config(dataclasses.replace(cfg.sae, **subset)),
        hook_name=routed_hook_name(cfg.sae.hook_names),
        # __post_init__ appends a fresh run id to checkpoint_path; keep the one the given config already has
        checkpoint_path=None,
    )
    out.checkpoint_path = cfg.checkpoint_path
    return out


def routed_model(model: Any, hook_names: Sequence[str]) -> AbstractContextManager[str]:
    """Add the routed hook point `blocks.N.hook_resid_routed` to `model` meanwhile; yields its name."""
    return routed_hook_point(model, SimpleNamespace(cfg=SimpleNamespace(hook_names=list(hook_names))))
