"""Load checkpoints written by the official RouteSAE code (github.com/swei2001/RouteSAEs).

The official format is a plain `torch.save(state_dict)`; it is read with `weights_only=True`, so a file
that holds anything but tensors is refused instead of unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.saes.config import RouteSAEConfig
from sae_lens_routing.saes.route_sae import RouteSAE

OFFICIAL_KEYS = {
    "router.weight": "W_router",  # [L, d] -> W_router [d, L]
    "sae.pre_bias": "b_dec",  # [d]
    "sae.latent_bias": "b_enc",  # [d_sae]
    "sae.encoder.weight": "W_enc",  # [d_sae, d] -> W_enc [d, d_sae]
    "sae.decoder.weight": "W_dec",  # [d, d_sae] -> W_dec [d_sae, d]
}


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official `.pt` file safely and check it has exactly the RouteSAE keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official RouteSAE checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} is not a weights-only checkpoint (it pickles non-tensor objects); refusing to unpickle "
            f"it. Re-save it as a plain state_dict of tensors. ({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path} is truncated or not a torch checkpoint: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} must hold a state_dict (dict of tensors), got {type(state).__name__}")
    missing = sorted(set(OFFICIAL_KEYS) - set(state))
    extra = sorted(set(state) - set(OFFICIAL_KEYS))
    if missing or extra:
        raise ValueError(
            f"{path} is not an official RouteSAE checkpoint: missing keys {missing}, unexpected keys {extra}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {bad} are not tensors")
    not_float = {k: str(v.dtype) for k, v in state.items() if not v.is_floating_point()}
    if not_float:
        raise ValueError(
            f"{path}: entries {not_float} are not float tensors; an official RouteSAE checkpoint holds float "
            "weights (re-save the trained model's state_dict)"
        )
    return state


def convert_official_state_dict(
    state: dict[str, torch.Tensor], n_layers: int
) -> tuple[dict[str, torch.Tensor], int, int]:
    """Map official keys/shapes to SAELens names; returns (state_dict, d_in, d_sae)."""
    L, d = state["router.weight"].shape
    d_sae = state["sae.latent_bias"].shape[0]
    expected = {
        "router.weight": (n_layers, d),
        "sae.pre_bias": (d,),
        "sae.latent_bias": (d_sae,),
        "sae.encoder.weight": (d_sae, d),
        "sae.decoder.weight": (d, d_sae),
    }
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(
                f"official checkpoint key {key!r} has shape {tuple(state[key].shape)}, expected {shape} "
                f"(L=len(hook_names)={n_layers}, d_in={d}, d_sae={d_sae})"
            )
    converted = {
        "W_router": state["router.weight"].T.contiguous(),
        "b_dec": state["sae.pre_bias"].clone(),
        "b_enc": state["sae.latent_bias"].clone(),
        "W_enc": state["sae.encoder.weight"].T.contiguous(),
        "W_dec": state["sae.decoder.weight"].T.contiguous(),
    }
    return converted, d, d_sae


def official_cfg_dict(
    *,
    d_in: int,
    d_sae: int,
    hook_names: list[str],
    k: int,
    routing: str = "hard",
    router_input: str = "sum",
    topk_relu: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    model_name: str | None = None,
) -> dict[str, Any]:
    """A RouteSAE cfg dict with the official semantics (TopK without ReLU, no decoder-norm rescaling)."""
    import sae_lens

    return {
        "architecture": "routesae",
        "d_in": d_in,
        "d_sae": d_sae,
        "k": k,
        "hook_names": list(hook_names),
        "routing": routing,
        "router_input": router_input,
        "standardize": True,
        "standardize_eps": 1e-6,
        "topk_relu": topk_relu,
        "rescale_acts_by_decoder_norm": False,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "device": device,
        "dtype": dtype,
        "metadata": {
            "model_name": model_name,
            "hook_name": hook_names[-1],
            "hook_names": list(hook_names),
            "sae_lens_version": sae_lens.__version__,
            "sae_lens_training_version": None,
            "source": "official RouteSAE checkpoint (github.com/swei2001/RouteSAEs)",
        },
    }


def load_official_checkpoint(
    path: str | Path,
    *,
    hook_names: list[str],
    k: int,
    routing: str = "hard",
    router_input: str = "sum",
    topk_relu: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    model_name: str | None = None,
) -> RouteSAE:
    """A `RouteSAE` from an official `.pt` checkpoint, computing exactly what the official model does.

    `hook_names` are the routed layers the checkpoint was trained on, in order (for the paper's choice use
    `paper_hook_names(n_layers)`); `k`, `routing` and `router_input` are not stored in official files.
    """
    state = read_official_state_dict(path)
    converted, d_in, d_sae = convert_official_state_dict(state, len(hook_names))
    cfg_dict = official_cfg_dict(
        d_in=d_in,
        d_sae=d_sae,
        hook_names=hook_names,
        k=k,
        routing=routing,
        router_input=router_input,
        topk_relu=topk_relu,
        device=device,
        dtype=dtype,
        model_name=model_name,
    )
    sae = RouteSAE(RouteSAEConfig.from_dict(cfg_dict))
    sae.load_state_dict(converted)
    return sae.to(device=device, dtype=getattr(torch, dtype))
