"""Fold the final norm's gain into the unembedding for the duration of a dashboard run.

sae-dashboard computes a feature's logit effects as `W_dec @ model.W_U`, which assumes TransformerLens's
`fold_ln=True` (the final norm's weight already inside `W_U`). Models loaded without folding, such as
`load_local_model` (GGUF / local Hugging Face Llama folders, `fold_ln=False`), keep the gain in `ln_final.w`;
for SmolLM2 it varies from -2.1 to 3.3 across dimensions, and ignoring it changes ~40% of a feature's
top-10 boosted tokens. Folding is an exact reparametrisation of the model (`(n * w + b) @ W_U + b_U` equals
`n @ (w[:, None] * W_U) + (b @ W_U + b_U)`), and the original parameters are restored bit for bit afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def final_norm_folded_into_unembed(model: Any) -> Iterator[bool]:
    """Within the block `model.W_U` includes `ln_final`'s gain (and `b_U` its bias); yields whether it folded.

    No-op for models without a final-norm weight (already folded: `LNPre`/`RMSPre`, or no final norm).
    """
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
            for param, value in zip(params, saved):
                param.copy_(value)
