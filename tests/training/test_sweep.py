"""RouteSAESweepRunner: several RouteSAEs from one model forward per batch, each equal to its solo run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import route_runner_cfg, tiny_model, token_dataset, write_config
from sae_lens import SAE

from sae_lens_routing import RouteSAE
from sae_lens_routing.training.runner import RouteSAETrainingRunner
from sae_lens_routing.training.sweep import RouteSAESweepRunner, train_sweep_from_config, variant_config

VARIANTS = {
    "k2": {"sae": {"k": 2}},
    "wide": {"sae": {"d_sae": 64}, "lr": 3e-3},  # a different init size: the data order must not move
    "soft": {"sae": {"routing": "soft", "aux_loss_coefficient": 0.0}},
}


def test_each_variant_equals_its_solo_run(tmp_path):
    base = route_runner_cfg(
        tmp_path, training_tokens=128 * 12, n_checkpoints=1, checkpoint_path=str(tmp_path / "ckpt")
    )
    overlapped = variant_config(base, {"prefetch_llm_batches": 2}, "x")
    overlapped.output_path, overlapped.checkpoint_path = base.output_path, base.checkpoint_path
    model = tiny_model()
    sweep = RouteSAESweepRunner(
        overlapped, VARIANTS, override_dataset=token_dataset(64), override_model=model
    )
    saes = sweep.run()
    assert list(saes) == list(VARIANTS)

    for runner, (name, overrides) in zip(sweep.runners, VARIANTS.items()):
        cfg = variant_config(base, overrides, name)
        cfg.output_path, cfg.checkpoint_path = str(tmp_path / f"solo_{name}"), None
        solo_runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=model)
        solo = solo_runner.run()
        trained, alone = saes[name].state_dict(), solo.state_dict()
        for key in alone:
            torch.testing.assert_close(trained[key], alone[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")
        assert runner.trainer.n_training_steps == solo_runner.trainer.n_training_steps == 12
        # saved and checkpointed as if trained alone, each in its own folder
        loaded = SAE.load_from_disk(tmp_path / "out" / name)
        assert (
            isinstance(loaded, RouteSAE) and loaded.cfg.k == cfg.sae.k and loaded.cfg.d_sae == cfg.sae.d_sae
        )
        ckpts = [p for p in (tmp_path / "ckpt").glob(f"*/{name}/*") if p.is_dir()]
        assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.pt").exists(), ckpts
        assert (tmp_path / "out" / name / "training_metrics.json").exists()
        assert runner.final_metrics["sparsity/l0"] <= cfg.sae.k


def test_sweep_runs_the_model_once_per_batch(tmp_path):
    cfg = route_runner_cfg(tmp_path, training_tokens=128 * 4, output_path=None)
    model = tiny_model()
    calls = []
    model.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=model).run()
    solo = len(calls)
    calls.clear()
    RouteSAESweepRunner(
        cfg,
        [{"sae": {"k": 2}}, {"sae": {"k": 3}}, {"sae": {"k": 4}}],
        override_dataset=token_dataset(64),
        override_model=model,
    ).run()
    assert len(calls) == solo


@pytest.mark.parametrize(
    ("variant", "field"),
    [
        ({"context_size": 8}, "context_size"),
        ({"seed": 7}, "seed"),
        ({"train_batch_size_tokens": 64}, "train_batch_size_tokens"),
        ({"model_name": "other"}, "model_name"),
        ({"sae": {"hook_names": ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]}}, "sae.hook_names"),
    ],
)
def test_variants_that_change_the_activations_are_refused(tmp_path, variant, field):
    cfg = route_runner_cfg(tmp_path)
    model = tiny_model()
    calls = []
    model.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=f"changes {field} "):
        RouteSAESweepRunner(
            cfg, [{"sae": {"k": 2}}, variant], override_dataset=token_dataset(64), override_model=model
        )
    assert calls == []


def test_bad_sweeps_name_the_problem(tmp_path):
    cfg = route_runner_cfg(tmp_path)
    data = token_dataset(64)
    with pytest.raises(ValueError, match="unknown fields \\['kk'\\]"):
        RouteSAESweepRunner(cfg, [{"kk": 1}], override_dataset=data, override_model=tiny_model())
    same = "variant 'variant_0' output_path='x' equals variant 'variant_1' output"
    with pytest.raises(ValueError, match=same):
        RouteSAESweepRunner(
            cfg,
            [{"output_path": "x"}, {"output_path": "x"}],
            override_dataset=data,
            override_model=tiny_model(),
        )
    with pytest.raises(ValueError, match="names must be unique"):
        RouteSAESweepRunner(
            cfg, [{"name": "a"}, {"name": "a"}], override_dataset=data, override_model=tiny_model()
        )
    with pytest.raises(ValueError, match="k must be <= d_sae"):
        RouteSAESweepRunner(cfg, [{"sae": {"k": 64}}], override_dataset=data, override_model=tiny_model())


def test_train_sweep_from_yaml(tmp_path):
    data = yaml.safe_load(write_config(tmp_path, training_tokens=512).read_text())
    data["sweep"] = [{"name": "k2", "sae": {"k": 2}}, {"name": "lr", "lr": 0.01}]
    runner, summaries = train_sweep_from_config(data)
    assert list(summaries) == ["k2", "lr"]
    for name, summary in summaries.items():
        assert summary["output_path"] == str(tmp_path / "out" / name)
        loaded = SAE.load_from_disk(tmp_path / "out" / name)
        assert loaded.cfg.k == (2 if name == "k2" else 4)
    assert runner.runners[1].cfg.lr == 0.01 and runner.runners[1].cfg.lr_end == 0.001
    with pytest.raises(ValueError, match="changes context_size"):
        train_sweep_from_config({**data, "sweep": [{"sae": {"k": 2}}, {"context_size": 16}]})


def test_train_command_runs_a_yaml_sweep(tmp_path):
    from sae_lens_routing.cli.main import main

    sweep = [{"name": "k2", "sae": {"k": 2}}, {"name": "k4"}]
    path = write_config(tmp_path, training_tokens=256, sweep=sweep)
    assert main(["train", "--config", str(path), "--summary-json", str(tmp_path / "s.json")]) == 0
    summaries = json.loads((tmp_path / "s.json").read_text())
    assert list(summaries) == ["k2", "k4"]
    assert [SAE.load_from_disk(tmp_path / "out" / n).cfg.k for n in summaries] == [2, 4]
