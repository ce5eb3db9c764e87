"""Keys and shapes of a RouteSAE state dict against its config: the one integrity check the model owns.

`RouteSAE.process_state_dict_for_loading` runs it on every SAELens load path; the file checks that run before it
(`sae_lens_routing.loading.integrity`) raise the same `IntegrityError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class IntegrityError(ValueError):
    """A saved SAE is missing a file, is truncated or corrupted, or does not match its config."""


def expected_route_shapes(d_in: int, d_sae: int, n_layers: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a RouteSAE (SAELens names; W_router maps the pooled input to L logits)."""
    return {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
        "W_router": (d_in, n_layers),
    }


def check_route_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    d_in: int,
    d_sae: int,
    n_layers: int,
    source: str = "state_dict",
) -> None:
    """Keys and shapes of a RouteSAE state dict against its config (d_in, d_sae, L = len(hook_names)), and a
    usable decoder. SAELens loads an all-zero or non-finite W_dec without complaint; the first forward would then
    give NaN (decoder-norm rescaling divides by the zero norms) or a constant b_dec, so it is refused here, at
    every load, for the price of one pass over W_dec."""
    expected = expected_route_shapes(d_in, d_sae, n_layers)
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise IntegrityError(
            f"{source}: RouteSAE weights must be exactly {sorted(expected)}; missing {missing}, "
            f"unexpected {extra}"
        )
    for key, shape in expected.items():
        got = tuple(state_dict[key].shape)
        if got != shape:
            raise IntegrityError(
                f"{source}: {key} has shape {got}, but the config expects {shape} "
                f"(d_in={d_in}, d_sae={d_sae}, L=len(hook_names)={n_layers})"
            )
    W_dec = state_dict["W_dec"]
    if not bool(torch.isfinite(W_dec).all()):
        raise IntegrityError(f"{source}: W_dec contains NaN or Inf values: not a usable RouteSAE")
    if not bool(W_dec.any()):
        raise IntegrityError(f"{source}: W_dec is all zeros: not a trained RouteSAE")
