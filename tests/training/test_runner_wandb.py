"""W&B logging of a RouteSAE run (offline mode: nothing leaves the machine), incl. the routing-share chart."""

from __future__ import annotations

import wandb
from helpers import route_runner_cfg, tiny_model, token_dataset
from sae_lens.config import LoggingConfig

from sae_lens_routing.training.runner import RouteSAETrainingRunner


def test_wandb_logs_routing_metrics_and_chart(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged: list[dict] = []
    real_log = wandb.sdk.wandb_run.Run.log  # wandb.init rebinds wandb.log to the run's method

    def capture(run, data, *args, **kwargs):
        logged.append(dict(data))
        return real_log(run, data, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", capture)
    logger = LoggingConfig(
        log_to_wandb=True, wandb_project="test", wandb_log_frequency=2, eval_every_n_wandb_logs=2
    )
    cfg = route_runner_cfg(tmp_path, training_tokens=128 * 8, logger=logger)
    RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model()).run()
    keys = set().union(*logged)
    assert {
        "metrics/routing/share/blocks.1.hook_resid_post",
        "metrics/routing/share/blocks.2.hook_resid_post",
        "losses/normalized_mse_loss",
    } <= keys
    assert {
        "eval/reconstruction_quality/normalized_mse",
        "eval/reconstruction_quality/explained_variance",
        "eval/sparsity/l0",
        "eval/routing/share/blocks.1.hook_resid_post",
        "eval/routing/entropy_bits",
    } <= keys
    assert "plots/routing_share" in keys
    shares = [d for d in logged if "metrics/routing/share/blocks.1.hook_resid_post" in d][0]
    pair = tuple(f"metrics/routing/share/blocks.{i}.hook_resid_post" for i in (1, 2))
    assert abs(shares[pair[0]] + shares[pair[1]] - 1) < 1e-5
