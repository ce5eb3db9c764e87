"""forward_routed reproduces the official RouteSAE code's own outputs (vectors it produced)."""

from __future__ import annotations

import pytest
import torch
from helpers import OFFICIAL_CKPT, OFFICIAL_VECTORS
from safetensors.torch import load_file

from sae_lens_routing import RouteSAE, load_official_checkpoint, paper_hook_names

NAMES = paper_hook_names(8)  # the official run: 8-layer model, 5 routed layers (blocks 1..5)


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    return load_file(OFFICIAL_VECTORS)


@pytest.mark.parametrize("router_input", ["sum", "mean"])
@pytest.mark.parametrize("routing", ["hard", "soft"])
def test_forward_routed_matches_official(vectors, router_input, routing):
    sae = load_official_checkpoint(
        OFFICIAL_CKPT, hook_names=NAMES, k=8, routing=routing, router_input=router_input
    )
    assert isinstance(sae, RouteSAE) and sae.cfg.topk_relu is False
    out = sae.forward_routed(vectors["hidden_states"])
    prefix = f"{router_input}_{routing}."
    for ours, theirs in [
        ("router_weights", "router_weights"),
        ("layer_weights", "layer_weights"),
        ("sae_in", "routed_x"),
        ("feature_acts", "latents"),
        ("sae_out", "x_hat"),
    ]:
        torch.testing.assert_close(getattr(out, ours), vectors[prefix + theirs], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.standardized.x, vectors["x"], atol=1e-5, rtol=0)
    assert out.layer_index.shape == (3, 7)
    assert torch.equal(out.layer_index, vectors[prefix + "router_weights"].argmax(-1))


def test_paper_layers():
    assert paper_hook_names(8) == [f"blocks.{i}.hook_resid_post" for i in range(1, 6)]
    assert paper_hook_names(16) == [f"blocks.{i}.hook_resid_post" for i in range(3, 12)]
    assert len(paper_hook_names(30)) == 16  # SmolLM2: blocks 6..21


def test_official_loader_validates(tmp_path):
    state = torch.load(OFFICIAL_CKPT, weights_only=True)
    with pytest.raises(ValueError, match=r"W_router has shape .*L=len\(hook_names\)=4"):
        load_official_checkpoint(OFFICIAL_CKPT, hook_names=paper_hook_names(8)[:4], k=8)
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": state["sae.encoder.weight"]}, foreign)
    with pytest.raises(ValueError, match="not an official RouteSAE checkpoint"):
        load_official_checkpoint(foreign, hook_names=NAMES, k=8)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(OFFICIAL_CKPT.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        load_official_checkpoint(truncated, hook_names=NAMES, k=8)
    pickled = tmp_path / "evil.pt"
    torch.save({**state, "extra": object.__new__(_Payload)}, pickled)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_official_checkpoint(pickled, hook_names=NAMES, k=8)
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "missing.pt", hook_names=NAMES, k=8)


class _Payload:
    """A non-tensor object: weights_only loading must refuse to build it."""
