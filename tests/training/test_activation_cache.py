"""Cache once, train many: the routed cache holds the model's routed layers, trains RouteSAEs without the
model, refuses a cache that does not fit the run, and resumes exactly where an uninterrupted run would be."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset
from safetensors.torch import load_file

from sae_lens_routing.training.activation_cache import (
    METADATA_FILENAME,
    CachedMultiLayerActivationsStore,
    cache_routed_activations,
    read_cache_metadata,
)
from sae_lens_routing.training.runner import RouteSAETrainingRunner

HOOKS = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = route_runner_cfg(tmp, n_eval_batches=2)
    cache_routed_activations(
        tiny_model(), cfg, tmp / "cache", override_dataset=token_dataset(400), n_tokens=5000
    )
    return tmp / "cache"


def cached_cfg(tmp_path, cache_dir, **overrides):
    base = dict(use_cached_activations=True, cached_activations_path=str(cache_dir), n_eval_batches=2)
    base.update(overrides)
    return route_runner_cfg(tmp_path, **base)


def test_cache_holds_the_models_routed_layers(cache_dir):
    from datasets import load_from_disk

    meta = read_cache_metadata(cache_dir)
    assert meta.hook_names == HOOKS and meta.d_in == 16 and meta.dtype == "float32"
    assert meta.model_name == "tiny" and meta.context_size == 16
    assert meta.n_kept_tokens >= 5000 and meta.n_tokens == meta.n_sequences * 16
    ds = load_from_disk(str(cache_dir)).with_format("torch")  # SAELens's layout: one column per hook
    assert set(ds.column_names) == {*HOOKS, "token_ids"}
    rows = token_dataset(400)["tokens"][:3]
    _, acts = tiny_model().run_with_cache(torch.tensor(rows), names_filter=HOOKS)
    for hook in HOOKS:
        torch.testing.assert_close(ds[:3][hook], acts[hook], atol=1e-5, rtol=1e-5)
    assert ds[:3]["token_ids"].tolist() == rows
    assert not list(cache_dir.parent.glob(".cache.tmp-*"))  # atomic: nothing left beside it


def test_stock_saelens_store_reads_one_hook_of_the_cache(cache_dir, tmp_path):
    """A float32 routed cache is also a SAELens cache for each of its hooks (single-layer baselines)."""
    from sae_lens import ActivationsStore, LanguageModelSAERunnerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=16, d_sae=32, k=4),
        hook_name=HOOKS[1],
        context_size=16,
        use_cached_activations=True,
        cached_activations_path=str(cache_dir),
        store_batch_size_prompts=2,
        train_batch_size_tokens=32,
        n_batches_in_buffer=4,
        checkpoint_path=None,
        verbose=False,
    )
    # SAELens's store wants a dataset even when it reads a cache (it never iterates it then)
    store = ActivationsStore.from_config(tiny_model(), cfg, override_dataset=token_dataset(8))
    acts, ids = store.get_raw_llm_batch()
    _, cache = tiny_model().run_with_cache(torch.tensor(token_dataset(400)["tokens"][:2]), names_filter=HOOKS)
    torch.testing.assert_close(acts, cache[HOOKS[1]].reshape(-1, 16), atol=1e-5, rtol=1e-5)


def test_trains_from_the_cache_without_a_model(cache_dir, tmp_path):
    cfg = cached_cfg(tmp_path, cache_dir, training_tokens=128 * 30, lr=3e-3)
    runner = RouteSAETrainingRunner(cfg)
    assert runner.model is None
    store = runner.activations_store
    assert isinstance(store, CachedMultiLayerActivationsStore)
    eval_batches = [store.get_multi_layer_llm_batch() for _ in range(2)]
    assert all(b.shape[1:] == (2, 16) for b in eval_batches)
    from sae_lens_routing.training.trainer import routed_reconstruction_metrics

    runner.sae.eval()
    before = routed_reconstruction_metrics(runner.sae, eval_batches)["reconstruction_quality/normalized_mse"]
    runner.run()
    after = routed_reconstruction_metrics(runner.sae, eval_batches)["reconstruction_quality/normalized_mse"]
    assert runner.trainer.n_training_samples == 128 * 30
    assert after < 0.75 * before, (before, after)
    assert runner.final_metrics["training_tokens"] == 128 * 30


def test_batches_are_shuffled_special_tokens_excluded_and_cover_the_stream(cache_dir, tmp_path):
    store = RouteSAETrainingRunner(cached_cfg(tmp_path, cache_dir, training_tokens=1024)).activations_store
    batches = [next(store) for _ in range(8)]
    assert all(b.shape == (128, 2, 16) for b in batches)
    # the first batch is drawn from the first block (n_batches_in_buffer sequences), shuffled
    a, b = store.blocks[0]
    block = store._read_rows(a, b, shuffle_seed=None)
    match = (batches[0][:, None] == block[None]).flatten(2).all(-1)  # [batch row, block row]
    assert bool(match.any(1).all())
    assert match.float().argmax(1).tolist() != sorted(match.float().argmax(1).tolist())
    assert store.read_position == 8 * 128
    # BOS (token 0, excluded) positions never reach a batch: each cached BOS activation is absent
    from datasets import load_from_disk

    ds = load_from_disk(str(cache_dir)).with_format("torch")
    bos = torch.stack([ds[i][HOOKS[0]][0] for i in range(4)])
    seen = torch.cat(batches)[:, 0]
    assert not any(torch.isclose(seen, b).all(1).any() for b in bos)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hook_names": ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]}, "sae.hook_names"),
        ({"model_name": "other-model"}, "model_name='tiny'"),
        ({"sae": {"d_in": 8}}, "sae.d_in=16"),
        ({"dtype": "bfloat16"}, "dtype='float32'"),
        ({"context_size": 8}, "context_size=16"),
        ({"training_tokens": 10**6}, "fewer than training_tokens=1000000"),
    ],
)
def test_a_cache_that_does_not_fit_the_run_is_refused(cache_dir, tmp_path, overrides, message):
    overrides = dict(overrides)
    sae_kw = overrides.pop("sae", None)
    cfg = cached_cfg(tmp_path, cache_dir, hook_names=overrides.pop("hook_names", None), **overrides)
    if sae_kw:
        from sae_lens_routing import RouteTrainingSAEConfig

        cfg.sae = RouteTrainingSAEConfig(d_sae=32, k=4, hook_names=HOOKS, **sae_kw)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        RouteSAETrainingRunner(cfg)


def test_missing_or_foreign_cache_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="cache-activations"):
        RouteSAETrainingRunner(cached_cfg(tmp_path, tmp_path / "nowhere"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=METADATA_FILENAME):
        RouteSAETrainingRunner(cached_cfg(tmp_path, tmp_path / "plain"))
    with pytest.raises(ValueError, match="override_dataset cannot be combined"):
        RouteSAETrainingRunner(cached_cfg(tmp_path, tmp_path / "plain"), override_dataset=token_dataset(8))


def test_cache_refuses_to_overwrite_and_bad_dtype(tmp_path, cache_dir):
    with pytest.raises(FileExistsError, match="already exists"):
        cache_routed_activations(tiny_model(), route_runner_cfg(tmp_path), cache_dir)
    with pytest.raises(ValueError, match="dtype must be one of"):
        cache_routed_activations(tiny_model(), route_runner_cfg(tmp_path, dtype="float64"), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_bfloat16_cache_round_trips(tmp_path):
    cfg = route_runner_cfg(tmp_path, dtype="bfloat16", n_eval_batches=1)
    cache_routed_activations(
        tiny_model(), cfg, tmp_path / "c", override_dataset=token_dataset(64), n_tokens=600
    )
    assert read_cache_metadata(tmp_path / "c").storage_dtype == "bfloat16-bits-in-int16"
    run_cfg = cached_cfg(tmp_path, tmp_path / "c", dtype="bfloat16", n_eval_batches=1, training_tokens=256)
    store = RouteSAETrainingRunner(run_cfg).activations_store
    batch = store.get_multi_layer_llm_batch()
    _, cache = tiny_model().run_with_cache(torch.tensor(token_dataset(64)["tokens"]), names_filter=HOOKS)
    want = torch.stack([cache[h] for h in HOOKS], dim=2).to(torch.bfloat16)
    assert batch.dtype == torch.bfloat16
    # the first eval row is some cached sequence: its non-BOS positions equal the model's, bit for bit
    n_eval_first = store.eval_range[0]
    torch.testing.assert_close(batch[:15], want[n_eval_first, 1:], atol=0, rtol=0)


def test_resume_equals_an_uninterrupted_run(cache_dir, tmp_path):
    """The checkpoint stores the cache read position; the resumed run ends with the same weights."""
    full_cfg = cached_cfg(
        tmp_path,
        cache_dir,
        training_tokens=128 * 12,
        n_checkpoints=1,
        checkpoint_path=str(tmp_path / "ckpt"),
        output_path=str(tmp_path / "full"),
    )
    full = RouteSAETrainingRunner(full_cfg)
    full_sae = full.run()
    (ckpt,) = [p for p in (tmp_path / "ckpt").glob("*/*") if p.is_dir()]
    state = load_file(ckpt / "activations_store_state.safetensors")
    n_at_ckpt = torch.load(ckpt / "trainer_state.pt", weights_only=False)["n_training_samples"]
    assert 0 < int(state["cache_read_position"]) == n_at_ckpt < 128 * 12

    resumed_cfg = cached_cfg(
        tmp_path,
        cache_dir,
        training_tokens=128 * 12,
        resume_from_checkpoint=str(ckpt),
        output_path=str(tmp_path / "resumed"),
    )
    resumed = RouteSAETrainingRunner(resumed_cfg)
    resumed_sae = resumed.run()
    assert resumed.trainer.n_training_samples == 128 * 12
    for name, param in full_sae.state_dict().items():
        torch.testing.assert_close(resumed_sae.state_dict()[name], param, atol=1e-6, rtol=1e-5, msg=name)
    nmse = "reconstruction_quality/normalized_mse"
    assert resumed.final_metrics[nmse] == pytest.approx(full.final_metrics[nmse])

    # a checkpoint of a live run (no read position) or of another cache is refused
    store = RouteSAETrainingRunner(cached_cfg(tmp_path, cache_dir, training_tokens=256)).activations_store
    from safetensors.torch import save_file

    save_file({"n_dataset_processed": torch.tensor(3)}, tmp_path / "live.safetensors")
    with pytest.raises(ValueError, match="did not read an activation cache"):
        store.load(str(tmp_path / "live.safetensors"))
    save_file({**state, "cache_id": state["cache_id"] + 1}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="another activation cache"):
        store.load(str(tmp_path / "other.safetensors"))


@pytest.mark.slow  # two CLI processes (~17 s)
def test_cli_caches_once_and_trains_from_the_same_yaml(tmp_path):
    """`cache-activations` then `train` with `use_cached_activations: true`: no model or corpus is loaded."""
    from helpers import cli, write_config

    config = write_config(
        tmp_path,
        cached_activations_path=str(tmp_path / "acts"),
        training_tokens=1024,
        n_eval_batches=1,
        sae={"d_sae": 64, "k": 4, "hook_names": "paper"},
    )
    res = cli("cache-activations", "--config", str(config), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = read_cache_metadata(tmp_path / "acts")
    assert meta.model_name == "model" and meta.model_path == str(tmp_path / "model")
    assert meta.n_kept_tokens >= 1024 + 4 * 32 and meta.hook_names[0] == "blocks.0.hook_resid_post"

    # the model folder is gone: a cached run must not need it
    import shutil

    shutil.move(str(tmp_path / "model"), str(tmp_path / "model-moved"))
    res = cli(
        "train",
        "--config",
        str(config),
        "--set",
        "use_cached_activations=true",
        "--summary-json",
        str(tmp_path / "s.json"),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "s.json").read_text())["training_tokens"] == 1024
