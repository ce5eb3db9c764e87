"""RouteSAETrainingRunner: a SAELens config run trains, checkpoints, resumes and saves a loadable RouteSAE."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset
from sae_lens import SAE, LanguageModelSAETrainingRunner

from sae_lens_routing import RouteSAE
from sae_lens_routing.training.runner import RouteSAETrainingRunner, format_summary, training_summary
from sae_lens_routing.training.store import MultiLayerActivationsStore


def test_config_run_trains_checkpoints_and_saves(tmp_path):
    cfg = route_runner_cfg(
        tmp_path, n_checkpoints=2, checkpoint_path=str(tmp_path / "ckpt"), training_tokens=4096
    )
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    assert isinstance(runner.activations_store, MultiLayerActivationsStore)
    assert runner.activations_store.hook_names == cfg.sae.hook_names
    sae = runner.run()
    assert runner.trainer.n_training_steps == 4096 // 128
    ckpts = sorted(p for p in (tmp_path / "ckpt").glob("*/*") if p.is_dir())
    assert len(ckpts) == 2, ckpts
    for ckpt in ckpts:
        assert {
            "cfg.json",
            "sae_weights.safetensors",
            "trainer_state.pt",
            "activations_store_state.safetensors",
        } <= {p.name for p in ckpt.iterdir()}
    loaded = SAE.load_from_disk(cfg.output_path)
    assert isinstance(loaded, RouteSAE)
    assert loaded.cfg.metadata.hook_name == cfg.sae.hook_names[-1]
    assert loaded.cfg.hook_names == cfg.sae.hook_names
    acts = torch.randn(32, 2, 16)
    torch.testing.assert_close(
        loaded.forward_routed(acts).sae_out, sae.forward_routed(acts).sae_out, atol=1e-5, rtol=1e-5
    )
    summary = training_summary(runner)
    assert 0 <= summary["normalized_mse"] < 1.5 and summary["l0"] <= 4
    assert abs(sum(summary["routing_share"].values()) - 1) < 1e-6
    assert "routing share per layer" in format_summary(summary)
    assert not list(tmp_path.glob(".out.tmp-*"))  # the atomic output folder left nothing behind


def test_training_reduces_loss(tmp_path):
    cfg = route_runner_cfg(tmp_path, training_tokens=128 * 60, lr=3e-3)
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(256), override_model=tiny_model())
    runner.sae.eval()
    batches = [runner.activations_store.get_multi_layer_llm_batch() for _ in range(2)]
    from sae_lens_routing.training.trainer import routed_reconstruction_metrics

    before = routed_reconstruction_metrics(runner.sae, batches)["reconstruction_quality/normalized_mse"]
    runner.run()
    after = routed_reconstruction_metrics(runner.sae, batches)["reconstruction_quality/normalized_mse"]
    assert after < 0.6 * before, (before, after)


def test_prefetch_fills_batches_in_a_background_thread(tmp_path):
    """prefetch_llm_batches (SAELens's option) overlaps the model forward with the SAE step."""
    import threading

    cfg = route_runner_cfg(tmp_path, training_tokens=128 * 8, prefetch_llm_batches=True)
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    store = runner.activations_store
    threads: list[str] = []
    fill = store.get_multi_layer_llm_batch

    def recording_fill(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return fill(*args, **kwargs)

    store.get_multi_layer_llm_batch = recording_fill
    runner.run()  # the final evaluation reads the store from the main thread once the producer is closed
    assert runner.trainer.n_training_steps == 8
    main = threading.main_thread().name
    assert threads.count(main) == max(1, cfg.n_eval_batches), threads  # only the final evaluation
    assert len(threads) > threads.count(main), "no training batch came from the prefetch thread"
    assert runner.final_metrics["reconstruction_quality/normalized_mse"] < 1.5


def test_resume_restores_step_and_optimizer(tmp_path):
    cfg = route_runner_cfg(
        tmp_path, n_checkpoints=1, checkpoint_path=str(tmp_path / "ckpt"), training_tokens=2048
    )
    first = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    first.run()
    (ckpt,) = [p for p in (tmp_path / "ckpt").glob("*/*") if p.is_dir() and not p.name.startswith("final")]
    saved = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    cfg2 = route_runner_cfg(
        tmp_path, training_tokens=2048, resume_from_checkpoint=str(ckpt), output_path=str(tmp_path / "out2")
    )
    second = RouteSAETrainingRunner(cfg2, override_dataset=token_dataset(64), override_model=tiny_model())
    steps_seen = []
    original = second.build_trainer

    def build(data_provider):
        trainer = original(data_provider)
        real_fit = trainer.fit

        def fit():
            steps_seen.append(trainer.n_training_steps)
            opt_state = trainer.optimizer.state_dict()["state"]
            steps_seen.append(int(opt_state[0]["step"]))
            return real_fit()

        trainer.fit = fit
        return trainer

    second.build_trainer = build
    second.run()
    assert steps_seen == [saved["n_training_steps"], int(saved["optimizer"]["state"][0]["step"])]
    assert steps_seen[0] > 0
    assert second.trainer.n_training_samples == 2048  # continued to the end, not from zero
    assert SAE.load_from_disk(tmp_path / "out2").cfg.d_sae == 32


def test_stock_runner_fails_naming_ours(tmp_path):
    cfg = route_runner_cfg(tmp_path, hook_name="blocks.1.hook_resid_post")
    runner = LanguageModelSAETrainingRunner(
        cfg, override_dataset=token_dataset(64), override_model=tiny_model()
    )
    with pytest.raises(ValueError, match="RouteSAETrainingRunner"):
        runner.run()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hook_names": ["blocks.1.hook_resid_post", "blocks.9.hook_resid_post"]},
            "not hook points of the model",
        ),
        ({"sae": {"d_in": 24}}, "d_in must equal the model's d_model=16"),
        ({"context_size": 64}, "context_size must be <= the model's n_ctx=32"),
        ({"n_batches_in_buffer": 2}, "raise n_batches_in_buffer"),
    ],
)
def test_bad_runs_fail_before_compute(tmp_path, overrides, message):
    overrides = dict(overrides)
    hooks = overrides.pop("hook_names", None)
    sae_kw = overrides.pop("sae", {})
    cfg = route_runner_cfg(tmp_path, hook_names=hooks, **overrides)
    if sae_kw:
        from sae_lens_routing import RouteTrainingSAEConfig

        cfg.sae = RouteTrainingSAEConfig(d_sae=32, k=4, hook_names=cfg.sae.hook_names, **sae_kw)
    model = tiny_model()
    calls = []
    model.blocks[0].hook_resid_post.add_hook(lambda act, hook: calls.append(1), is_permanent=True)
    with pytest.raises(ValueError, match=message):
        RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=model)
    assert calls == []


def test_evaluator_pauses_the_prefetch_thread(tmp_path):
    """The in-training evaluator reads the store itself, so it must hold the prefetch producer meanwhile."""
    from sae_lens.training.prefetch import PrefetchingIterator

    from sae_lens_routing.training.trainer import RoutedTrainingEvaluator

    runner = RouteSAETrainingRunner(
        route_runner_cfg(tmp_path), override_dataset=token_dataset(64), override_model=tiny_model()
    )
    store = runner.activations_store
    prefetcher = PrefetchingIterator(iter(store), prefetch=1)
    fill = store.get_multi_layer_llm_batch
    held: list[bool] = []

    def checking_fill(*args, **kwargs):
        held.append(prefetcher._lock.locked())
        return fill(*args, **kwargs)

    try:
        store.get_multi_layer_llm_batch = checking_fill
        metrics = RoutedTrainingEvaluator(store, n_eval_batches=2)(runner.sae, prefetcher, None)
    finally:
        prefetcher.close()
    assert held[-2:] == [True, True]
    assert "eval/reconstruction_quality/normalized_mse" in metrics


def test_python_run_prints_the_cli_summary_and_returns_the_sae(tmp_path, capsys):
    """`RouteSAETrainingRunner(cfg).run()` ends as the CLI does: the summary, saying what each number is
    measured on (NormMSE per token vs explained variance around the mean), and the trained SAE."""
    cfg = route_runner_cfg(tmp_path, verbose=True)
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    sae = runner.run()
    out = capsys.readouterr().out
    assert out.count(format_summary(training_summary(runner))) == 1 and sae is runner.sae
    assert f"RouteSAE saved to: {cfg.output_path}" in out and "||x_hat - x||^2 / ||x||^2" in out
    assert "sum ||x - mean(x)||^2" in out and "routed input" in out
    assert f"measured on {training_summary(runner)['eval_tokens']} tokens" in out


def test_the_progress_bar_moves_in_a_short_run(tmp_path, capsys):
    """SAELens's bar moves every 100 steps; a 16-step run moved it only when it closed."""
    cfg = route_runner_cfg(tmp_path)  # 2048 tokens in batches of 128: 16 steps
    RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model()).run()
    shown = [int(n) for n in re.findall(r"(\d+)/2048", capsys.readouterr().err)]
    assert len(set(shown)) >= 8 and max(shown) == 2048, shown
