"""A RouteSAE read as one hook point, `blocks.N.hook_resid_routed` (the L routed layers stacked), for tools
that read one hook (sae-dashboard, SAELens's stock runner): `RouteSAE.encode` routes what they pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint

from sae_lens_routing.saes.routed_activations import check_hooks_in_model, routed_block_range

PSEUDO_HOOK = "hook_resid_routed"


@contextmanager
def routed_hook_point(model: Any, sae: Any) -> Iterator[str]:
    """Temporarily add `blocks.N.hook_resid_routed`: the routed layers stacked, [b, p, L*d_in]."""
    hooks = list(sae.cfg.hook_names)
    check_hooks_in_model(model, hooks, in_blocks=True)
    block_index = routed_block_range(hooks)[1] - 1  # type: ignore[index]
    block = model.blocks[block_index]
    block.add_module(PSEUDO_HOOK, HookPoint())
    model.setup()  # registers the new hook point in model.hook_dict under its module name
    collected: dict[int, torch.Tensor] = {}
    pseudo: HookPoint = getattr(block, PSEUDO_HOOK)

    def collect(i: int) -> Any:
        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            collected[i] = output
            if len(collected) == len(hooks):
                pseudo(torch.cat([collected[j] for j in range(len(hooks))], dim=-1))
                collected.clear()

        return hook

    handles = [model.hook_dict[h].register_forward_hook(collect(i)) for i, h in enumerate(hooks)]
    try:
        yield f"blocks.{block_index}.{PSEUDO_HOOK}"
    finally:
        for handle in handles:
            handle.remove()
        delattr(block, PSEUDO_HOOK)
        model.setup()
