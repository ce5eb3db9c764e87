"""The analysis commands (evaluate, steer) on a SAE trained from a local model folder."""

from __future__ import annotations

import json

import pytest

from sae_lens_routing.cli.main import main


def test_evaluate_command(trained, capsys):
    out = trained / "eval"
    assert (
        main(
            [
                "evaluate",
                "--sae",
                str(trained / "sae"),
                "--out",
                str(out),
                "--corpus",
                "python-topics",
                "--n-sequences",
                "4",
                "--context-size",
                "24",
                "--threshold",
                "0.5",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "eval.json").read_text())
    assert 0 <= metrics["sparsity/l0"] <= 4 and "model_performance_preservation/ce_loss_score" in metrics
    assert (out / "routing_share.png").stat().st_size > 1000
    contexts = json.loads((out / "feature_contexts.json").read_text())
    assert contexts["n_features"] == metrics["features/n_counted"]
    assert "ce_loss_score" in capsys.readouterr().out


def test_steer_command(trained, capsys):
    assert (
        main(
            [
                "steer",
                "--sae",
                str(trained / "sae"),
                "--prompt",
                "the value of",
                "--feature",
                "3=40",
                "--feature",
                "5=40",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "unsteered:" in printed and "steered:" in printed
    with pytest.raises(SystemExit):
        main(["steer", "--sae", str(trained / "sae"), "--prompt", "x", "--feature", "oops"])


def test_commands_load_through_load_route_sae(trained, tmp_path):
    """`--sae` goes through `load_route_sae`: a damaged folder is refused with a message naming the file."""
    import shutil

    from sae_lens_routing import IntegrityError

    bad = tmp_path / "sae"
    shutil.copytree(trained / "sae", bad)
    weights = bad / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="sae_weights.safetensors"):
        main(["steer", "--sae", str(bad), "--prompt", "x", "--feature", "3=4"])
    with pytest.raises(ValueError, match="sae_id is required"):
        main(["steer", "--sae", "org/name", "--prompt", "x", "--feature", "3=4"])
