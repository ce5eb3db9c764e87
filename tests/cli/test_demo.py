"""The main job's preset (`make demo`) end to end on the real model, with a tiny token budget."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import save_file

from sae_lens_routing import RouteSAE
from sae_lens_routing.cli.commands.demo import dashboard_features
from sae_lens_routing.cli.main import main


def test_dashboard_features_are_live_and_not_dense(tmp_path):
    log10_density = torch.tensor([-10.0, -3.0, -0.5, -2.0, -6.0, -4.5, -1.5])
    save_file({"sparsity": log10_density}, tmp_path / "sparsity.safetensors")
    assert dashboard_features(tmp_path, n=2) == [1, 3]
    assert dashboard_features(tmp_path) == [1, 3, 5, 6]
    save_file({"sparsity": torch.full((4,), -10.0)}, tmp_path / "sparsity.safetensors")
    with pytest.raises(ValueError, match="no live latents"):
        dashboard_features(tmp_path)


@pytest.mark.real_model
def test_demo_preset_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--set", "training_tokens=4096", "--set", "n_eval_batches=1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "RouteSAE saved to" in printed and "blocks.9.hook_resid_post" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_tokens"] == 4096
    sae = SAE.load_from_disk(out / "sae")
    assert isinstance(sae, RouteSAE) and sae.cfg.d_in == 576 and len(sae.cfg.hook_names) == 7
    assert json.loads((out / "eval.json").read_text())["sparsity/l0"] <= 32
    assert "routing-panel" in (out / "dashboard.html").read_text()
