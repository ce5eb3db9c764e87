"""`python -m sae_lens_routing train --config run.yaml` end to end, kill-and-resume, and under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import cli as run_cli
from helpers import free_port, refuse_loaders, write_config
from sae_lens import SAE

from sae_lens_routing import RouteSAE
from sae_lens_routing.cli.main import cli, main


def test_train_from_yaml(tmp_path):
    config = write_config(tmp_path)
    res = run_cli(
        "train",
        "--config",
        str(config),
        "--set",
        "sae.k=8",
        "--summary-json",
        str(tmp_path / "s.json"),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "RouteSAE saved to" in res.stdout and "routing share per layer" in res.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["training_tokens"] == 2048 and summary["l0"] <= 8
    sae = SAE.load_from_disk(tmp_path / "out")
    assert isinstance(sae, RouteSAE) and sae.cfg.k == 8
    assert sae.cfg.hook_names == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
    ]
    assert sae.cfg.d_in == 32  # filled from the model's d_model
    assert sae.cfg.metadata.model_path == str(tmp_path / "model")  # what the analysis commands reload


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture
def nothing_loads(monkeypatch):
    """Every loader of the package raises: a config error must come before any of them runs."""
    refuse_loaders(monkeypatch)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sae.k=true"], "sae.k must be int, got True (bool)"),
        (['sae.d_sae="512"'], "sae.d_sae must be int, got '512' (str)"),
        (["lr=abc"], "lr must be float, got 'abc' (str)"),
        (["sae.hook_names=blocks.3.hook_resid_post"], "sae.hook_names must be a list of str or one of"),
        (["sae.k=65"], "k must be <= d_sae, got k=65 > d_sae=64"),
        (["output_path="], "--set 'output_path=' has no value"),
        (["device=cuda"], "CUDA requested (device='cuda') but torch.cuda.is_available() is False"),
        (["sae.hook_names=[a, b"], "--set 'sae.hook_names=[a, b': the value is not valid YAML"),
        (["cached_activations_path=/no/cache", "use_cached_activations=true"], "'/no/cache' does not exist"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_load_nothing(config, nothing_loads, capsys, overrides, message):
    args = ["train", "--config", str(config)] + [a for o in overrides for a in ("--set", o)]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_debug_shows_the_traceback(config, nothing_loads, capsys):
    with pytest.raises(TypeError, match="sae.k must be int"):
        cli(["--debug", "train", "--config", str(config), "--set", "sae.k=true"])
    with pytest.raises(TypeError, match="sae.k must be int"):  # main() is for embedding: it always raises
        main(["train", "--config", str(config), "--set", "sae.k=true"])
    assert capsys.readouterr().err == ""


def test_bad_yaml_fails_clearly(tmp_path):
    """The program itself (`python -m sae_lens_routing`): one `error:` line, exit code 2, no traceback."""
    config = write_config(tmp_path, not_a_field=1)
    res = run_cli("train", "--config", str(config), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1].startswith("error: unknown config fields ['not_a_field']")


def test_malformed_yaml_file_is_named(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text("sae: {k: 4\n")
    assert cli(["train", "--config", str(tmp_path / "broken.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'broken.yaml'} is not valid YAML: ") and "line 2" in err, err


@pytest.mark.slow  # three CLI processes, one killed mid-run (~20 s)
def test_kill_and_resume(tmp_path):
    config = write_config(
        tmp_path, training_tokens=128 * 400, n_checkpoints=4, checkpoint_path=str(tmp_path / "ckpt")
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_lens_routing", "train", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and ckpt is None:
        done = [
            p for p in (tmp_path / "ckpt").glob("*/*") if not p.name.startswith(".")
        ]  # renamed when complete
        ckpt = done[0] if done else None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "no checkpoint was written"
    assert not (tmp_path / "out").exists()  # killed before the end
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    res = run_cli("train", "--config", str(config), "--set", f"resume_from_checkpoint={ckpt}", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary_tokens = int(res.stdout.split("training tokens")[1].split()[0])
    assert summary_tokens == 128 * 400 and state["n_training_samples"] > 0
    assert isinstance(SAE.load_from_disk(tmp_path / "out"), RouteSAE)


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    config = write_config(
        tmp_path, training_tokens=256 * 8, train_batch_size_tokens=256, n_batches_in_buffer=16
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "sae_lens_routing",
            "train",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("RouteSAE saved to") == 1  # rank 0 alone reports
    assert "training tokens    2048" in res.stdout  # the global budget, split over the ranks
    assert isinstance(SAE.load_from_disk(tmp_path / "out"), RouteSAE)
