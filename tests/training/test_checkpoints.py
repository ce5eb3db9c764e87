"""Resume safety: a resumed run continues exactly like an uninterrupted one (steps, checkpoint schedule,
weights), and a checkpoint that is damaged or was trained for another SAE is refused before training, naming
why."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset

from sae_lens_routing import RouteTrainingSAEConfig
from sae_lens_routing.training.activation_cache import cache_routed_activations
from sae_lens_routing.training.checkpoints import DamagedCheckpointError
from sae_lens_routing.training.runner import RouteSAETrainingRunner

TOKENS = 128 * 32  # 32 steps; 3 checkpoints at 1152, 2176 and 3200 samples


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = route_runner_cfg(tmp, n_eval_batches=1)
    cache_routed_activations(
        tiny_model(), cfg, tmp / "cache", override_dataset=token_dataset(400), n_tokens=4600
    )
    return tmp / "cache"


def cached_cfg(tmp_path, cache_dir, name, **overrides):
    """A run reading the cache: batches depend on the read position only, so a resume can match exactly."""
    base = dict(
        use_cached_activations=True,
        cached_activations_path=str(cache_dir),
        n_eval_batches=1,
        training_tokens=TOKENS,
        n_checkpoints=3,
        checkpoint_path=str(tmp_path / f"ckpt_{name}"),
        output_path=str(tmp_path / name),
    )
    base.update(overrides)
    return route_runner_cfg(tmp_path, **base)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    """An uninterrupted run: (runner, its checkpoint folders by name)."""
    tmp = tmp_path_factory.mktemp("full")
    runner = RouteSAETrainingRunner(cached_cfg(tmp, cache_dir, "full"))
    runner.run()
    return runner, {p.name: p for p in (tmp / "ckpt_full").glob("*/*")}


def test_resume_continues_like_an_uninterrupted_run(full_run, cache_dir, tmp_path):
    full, ckpts = full_run
    assert sorted(ckpts, key=int) == ["1152", "2176", "3200"]
    first = ckpts["1152"]
    state = torch.load(first / "trainer_state.pt", weights_only=True)
    # the saved step count matches the optimizer's: 9 steps of 128 samples were done
    assert state["n_training_steps"] == 9 == int(state["optimizer"]["state"][0]["step"])

    resumed = RouteSAETrainingRunner(
        cached_cfg(tmp_path, cache_dir, "resumed", resume_from_checkpoint=str(first))
    )
    resumed_sae = resumed.run()
    assert full.trainer.n_training_steps == 32
    assert resumed.trainer.n_training_steps == 32
    written = sorted(p.name for p in (tmp_path / "ckpt_resumed").glob("*/*"))
    # the rest of the same schedule, nothing re-written at the resume point
    assert written == ["2176", "3200"]
    for name, param in full.sae.state_dict().items():
        torch.testing.assert_close(resumed_sae.state_dict()[name], param, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"hook_names": ["blocks.0.hook_resid_post", "blocks.3.hook_resid_post"]},
            r"sae\.hook_names=\['blocks\.1",
        ),
        (
            {"model_name": "other"},
            r"model_name='tiny' \(runner_cfg\.json\), but this run has model_name='other'",
        ),
        ({"sae": {"d_sae": 48}}, r"sae\.d_sae=32 \(cfg\.json\), but this run has sae\.d_sae=48"),
        ({"sae": {"k": 8}}, r"sae\.k=4 .*sae\.k=8"),
        ({"sae": {"d_in": 24}}, r"sae\.d_in=16 .*sae\.d_in=24"),
        ({"sae": {"routing": "soft"}}, r"sae\.routing='hard' .*sae\.routing='soft'"),
    ],
)
def test_resume_with_other_settings_is_refused_before_training(
    full_run, cache_dir, tmp_path, change, message
):
    _, ckpts = full_run
    change = dict(change)
    sae_change = change.pop("sae", None)
    cfg = cached_cfg(tmp_path, cache_dir, "other", resume_from_checkpoint=str(ckpts["1152"]), **change)
    if sae_change:  # route_runner_cfg's `sae` overrides only add fields: rebuild with the changed one
        fields = {"d_in": 16, "d_sae": 32, "k": 4, "hook_names": cfg.sae.hook_names, **sae_change}
        cfg.sae = RouteTrainingSAEConfig(**fields)
    with pytest.raises(ValueError, match=message):
        RouteSAETrainingRunner(cfg)
    assert not (tmp_path / "ckpt_other").exists()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "file"),
    [
        (_truncate, "trainer_state.pt"),
        (_truncate, "sae_weights.safetensors"),
        (_truncate, "activations_store_state.safetensors"),
        (lambda p: p.write_text(""), "activation_scaler.json"),
        (lambda p: p.write_text("{"), "runner_cfg.json"),
        (lambda p: p.unlink(), "cfg.json"),
        (lambda p: torch.save({"n_training_samples": 1, "x": argparse.Namespace()}, p), "trainer_state.pt"),
    ],
)
def test_damaged_checkpoint_names_the_file_and_the_previous_checkpoint(
    full_run, cache_dir, tmp_path, damage, file
):
    _, ckpts = full_run
    run_folder = shutil.copytree(ckpts["2176"].parent, tmp_path / "run")
    damage(run_folder / "2176" / file)
    cfg = cached_cfg(tmp_path, cache_dir, "again", resume_from_checkpoint=str(run_folder / "2176"))
    with pytest.raises(DamagedCheckpointError) as err:
        RouteSAETrainingRunner(cfg)
    text = str(err.value)
    assert f"the checkpoint {run_folder / '2176'} is damaged: {run_folder / '2176' / file}" in text
    assert f"resume_from_checkpoint='{run_folder / '1152'}'" in text  # the way on: the checkpoint before it

    damage(run_folder / "1152" / file)
    cfg = cached_cfg(tmp_path, cache_dir, "again", resume_from_checkpoint=str(run_folder / "1152"))
    with pytest.raises(
        DamagedCheckpointError, match="no earlier checkpoint in .*without resume_from_checkpoint"
    ):
        RouteSAETrainingRunner(cfg)
