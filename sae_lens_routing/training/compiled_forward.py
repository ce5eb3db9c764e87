"""A hook-free forward to the routed `hook_resid_post`s: `torch.compile` traces hooks unreliably."""

from collections.abc import Callable
from typing import Any

import torch
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name


def resid_post_layers(hook_names: list[str]) -> list[int] | None:
    """Block indices of the hooks when every one is `blocks.N.hook_resid_post`, else None."""
    stops = [extract_stop_at_layer_from_tlens_hook_name(h) for h in hook_names]
    if any(s is None or h != f"blocks.{s - 1}.hook_resid_post" for s, h in zip(stops, hook_names)):
        return None
    return [s - 1 for s in stops]  # type: ignore[operator]


def supports_compiled_forward(model: Any, hook_names: list[str], model_kwargs: dict[str, Any]) -> bool:
    """The fast path needs resid_post hooks, a single-device HookedTransformer and no extra forward kwargs."""
    from transformer_lens import HookedTransformer

    return (isinstance(model, HookedTransformer) and resid_post_layers(hook_names) is not None
            and getattr(model.cfg, "n_devices", 1) == 1 and not model_kwargs)


def resid_post_forward(model: Any, hook_names: list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """tokens [batch, pos] -> residual stream after each routed block [batch, pos, L, d_model]."""
    layers = resid_post_layers(hook_names)
    if layers is None:
        raise ValueError(f"the compiled forward needs blocks.N.hook_resid_post hooks, got {hook_names}")
    stop, wanted = max(layers) + 1, set(layers)

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        residual, _, shortformer_pos_embed, attention_mask = model.input_to_embed(tokens, prepend_bos=False)
        after: dict[int, torch.Tensor] = {}
        for i in range(stop):
            residual = model.blocks[i](residual, shortformer_pos_embed=shortformer_pos_embed,
                                       attention_mask=attention_mask)
            if i in wanted:
                after[i] = residual
        return torch.stack([after[i] for i in layers], dim=-2)

    return forward


def compiled_resid_post_forward(model: Any, hook_names: list[str], mode: str | None = None
                                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`resid_post_forward` under `torch.compile` (compiled lazily, on the first batch)."""
    return torch.compile(resid_post_forward(model, hook_names), mode=mode)
