"""Shared fixtures: small RouteSAE configs and the official parity files (copied from the reference run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sae_lens_routing  # noqa: F401  (registers the architecture)
from sae_lens_routing import RouteTrainingSAE, RouteTrainingSAEConfig

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_CKPT = FIXTURES / "official_routesae_checkpoint.pt"
OFFICIAL_VECTORS = FIXTURES / "official_routesae_vectors.safetensors"
HOOKS4 = [f"blocks.{i}.hook_resid_post" for i in range(4)]


def make_training_sae(
    d_in: int = 16, d_sae: int = 64, k: int = 4, n_layers: int = 4, **kw
) -> RouteTrainingSAE:
    torch.manual_seed(0)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    return RouteTrainingSAE(RouteTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, hook_names=hooks, **kw))


@pytest.fixture
def training_sae() -> RouteTrainingSAE:
    return make_training_sae()
