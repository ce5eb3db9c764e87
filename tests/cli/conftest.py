"""Fixtures of the CLI tests: a SAE trained by `python -m sae_lens_routing train` on a local model folder."""

from __future__ import annotations

import pytest
from helpers import tiny_hf_llama_folder

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
