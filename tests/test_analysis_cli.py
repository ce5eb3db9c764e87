"""The analysis commands (evaluate, steer) on a SAE trained from a local model folder."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_hf_llama_folder

from sae_lens_routing.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("analysis")
    folder = tiny_hf_llama_folder(root / "model")
    config = {
        "model_path": str(folder),
        "corpus": "python-topics",
        "context_size": 32,
        "training_tokens": 1024,
        "train_batch_size_tokens": 128,
        "store_batch_size_prompts": 4,
        "n_batches_in_buffer": 8,
        "exclude_special_tokens": True,
        "device": "cpu",
        "output_path": str(root / "sae"),
        "logger": {"log_to_wandb": False},
        "sae": {"d_sae": 64, "k": 4, "hook_names": "paper"},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(root / "run.yaml")]) == 0
    return root


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
