"""Fold the final norm's gain into the unembedding while sae-dashboard runs: its logit effects `W_dec @ W_U`
assume `fold_ln=True`, which local models (`load_local_model`) are not loaded with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def final_norm_folded_into_unembed(model: Any) -> Iterator[bool]:
    """Within the block `W_U` includes `ln_final`'s gain (and `b_U` its bias), an exact reparametrisation;
    restored bit for bit after. Yields whether it folded (no final-norm weight: nothing to fold)."""
    ln_final, unembed = getattr(model, "ln_final", None), model.unembed
    gain, bias = getattr(ln_final, "w", None), getattr(ln_final, "b", None)
    if not isinstance(gain, torch.Tensor):
        yield False
        return
    params = [unembed.W_U, unembed.b_U, gain] + ([bias] if isinstance(bias, torch.Tensor) else [])
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            if isinstance(bias, torch.Tensor):
                unembed.b_U.add_(bias.to(unembed.W_U.dtype) @ unembed.W_U)
                bias.zero_()
            unembed.W_U.mul_(gain.to(unembed.W_U.dtype)[:, None])
            gain.fill_(1.0)
        yield True
    finally:
        with torch.no_grad():
            for param, value in zip(params, saved, strict=True):
                param.copy_(value)
