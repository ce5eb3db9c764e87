"""Shared fixtures. Helpers (plain functions) are in `helpers.py`, importable as `helpers` from any test
(pyproject's pytest `pythonpath`)."""

from __future__ import annotations

import pytest
from helpers import make_training_sae

import sae_lens_routing  # noqa: F401  (registers the architecture)
from sae_lens_routing import RouteTrainingSAE


@pytest.fixture
def training_sae() -> RouteTrainingSAE:
    return make_training_sae()
