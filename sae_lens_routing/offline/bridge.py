"""TransformerLens 3's `TransformerBridge` (SAELens's `SAETransformerBridge`): any Hugging Face causal LM with
TransformerLens hook names; booted with `no_processing=True` so activations equal the model's own."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch


def is_bridge_class(model_class_name: str | None) -> bool:
    return model_class_name in ("TransformerBridge", "SAETransformerBridge")


def require_bridge(model_class_name: str = "TransformerBridge") -> None:
    """One line naming the version needed when the installed TransformerLens has no bridge (2.x)."""
    version = importlib.metadata.version("transformer-lens")
    if int(version.split(".")[0]) < 3 and version != "0.0.0":  # 0.0.0: a source checkout
        raise ValueError(
            f"model_class_name: {model_class_name} needs transformer-lens>=3 (installed {version}); "
            "pip install 'transformer-lens>=3,<4', or use model_class_name: HookedTransformer"
        )


def load_bridge(
    model_name: str | None = None,
    model_path: str | Path | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
) -> Any:
    """An `SAETransformerBridge` from a Hugging Face name, or offline from a folder / GGUF / 'smollm2'."""
    require_bridge()
    from sae_lens import SAETransformerBridge

    source = model_name
    if model_path is not None:
        from sae_lens_routing.offline.local_model import hf_folder

        source = str(hf_folder(model_path))
    bridge = SAETransformerBridge.boot_transformers(source, device=device, dtype=getattr(torch, dtype))
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    return bridge.eval()
