"""Which residual-stream hook points to route between."""

from __future__ import annotations

from typing import Any


def paper_hook_names(n_layers: int, hook: str = "hook_resid_post") -> list[str]:
    """The paper's routed layers, blocks n//4-1 .. 3n//4-1 (Hugging Face `hidden_states[n//4 : 3n//4 +
    1]`)."""
    if not isinstance(n_layers, int) or n_layers < 4:
        raise ValueError(
            f"n_layers must be an integer >= 4 to route over its middle layers, got {n_layers!r}"
        )
    return [f"blocks.{i}.{hook}" for i in range(n_layers // 4 - 1, 3 * n_layers // 4)]


def paper_layers(model: Any, hook: str = "hook_resid_post") -> list[str]:
    """`paper_hook_names` for a HookedTransformer."""
    return paper_hook_names(int(model.cfg.n_layers), hook)
