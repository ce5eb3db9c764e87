"""The main job's preset (`make demo`) end to end on the real model, with a tiny token budget."""

from __future__ import annotations

import json

import pytest
from sae_lens import SAE

from sae_lens_routing import RouteSAE
from sae_lens_routing.cli.main import main


@pytest.mark.real_model
def test_demo_preset_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--set", "training_tokens=4096", "--set", "n_eval_batches=1",
              "--eval-sequences", "8"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "RouteSAE saved to" in printed and "blocks.9.hook_resid_post" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_tokens"] == 4096
    sae = SAE.load_from_disk(out / "sae")
    assert isinstance(sae, RouteSAE) and sae.cfg.d_in == 576 and len(sae.cfg.hook_names) == 7
    evals = json.loads((out / "eval.json").read_text())
    assert evals["sparsity/l0"] <= 32
    rule = evals["features/threshold_rule"]  # 7.955 = 15 x sqrt(576 / 2048)
    assert rule.startswith("width-aware") and "d_in = 576" in rule
    assert "routing-panel" in (out / "dashboard.html").read_text()
    for name in ("dashboard.html", "feature_contexts.json"):  # "£" is never shown as its byte pieces
        text = (out / name).read_text(encoding="utf-8")
        assert "\u00c2\u00a3" not in text and "\\u00c2\\u00a3" not in text, name
    assert "python -m sae_lens_routing interpret --sae" in printed  # the judge command, then its dry run
    assert "dry run: nothing sent" in printed or "interpret dry run: no latent counts" in printed
