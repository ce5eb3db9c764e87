"""YAML + `--set` -> one typed, resolved, validated `RunConfig`, without loading a model or a corpus."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import yaml
from helpers import refuse_loaders, write_config
from sae_lens import LanguageModelSAERunnerConfig
from sae_lens.config import LoggingConfig

from sae_lens_routing import RouteTrainingSAEConfig
from sae_lens_routing.training.activation_cache import METADATA_FILENAME, CacheMetadata
from sae_lens_routing.training.run_config import apply_overrides, load_run_config, parse_run_config


@pytest.fixture(autouse=True)
def nothing_loads(monkeypatch):
    """Parsing must never load weights or text: every loader of the package raises."""
    refuse_loaders(monkeypatch)
    fail = lambda *a, **k: pytest.fail("load_model was called")  # noqa: E731
    monkeypatch.setattr("sae_lens.load_model.load_model", fail)


def model_folder(tmp_path, n_layers=8, d_model=48):
    """A local Hugging Face model folder as far as the config needs one: its config.json."""
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": n_layers, "hidden_size": d_model}))
    return folder


def write_yaml(tmp_path, **overrides):
    defaults = {"model_path": str(model_folder(tmp_path)), "lr": "1e-3", "seqpos_slice": [1, None]}
    return write_config(tmp_path, **{**defaults, **overrides})  # "1e-3": what YAML 1.1 makes of `lr: 1e-3`


def test_yaml_and_set_become_one_typed_config(tmp_path):
    run = load_run_config(write_yaml(tmp_path), ["sae.k=8", "sae.routing=soft", "logger.wandb_project=p"])
    cfg = run.runner
    assert isinstance(cfg, LanguageModelSAERunnerConfig) and isinstance(cfg.sae, RouteTrainingSAEConfig)
    assert (cfg.sae.k, cfg.sae.routing, cfg.sae.d_sae) == (8, "soft", 64)
    # the paper's layers of an 8-layer model (blocks 1..5) and d_in = d_model, read from config.json alone
    assert cfg.sae.hook_names == [f"blocks.{i}.hook_resid_post" for i in range(1, 6)] and cfg.sae.d_in == 48
    assert cfg.lr == 0.001 and cfg.seqpos_slice == (1, None)
    assert isinstance(cfg.logger, LoggingConfig) and cfg.logger.wandb_project == "p"
    assert cfg.model_name == "tiny-llama" and run.corpus == "python-topics"
    assert run.model_path == str(tmp_path / "tiny-llama")
    assert cfg.sae.metadata.model_path == run.model_path  # in the SAE's cfg.json, for the analysis commands


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sae.k=true"], "sae.k must be int, got True (bool)"),
        (['sae.d_sae="512"'], "sae.d_sae must be int, got '512' (str)"),
        (["lr=abc"], "lr must be float, got 'abc' (str)"),
        (["sae.hook_names=blocks.3.hook_resid_post"], "sae.hook_names must be a list of str or one of"),
        (["sae.hook_names=[blocks.0.hook_resid_post, 3]"], "sae.hook_names must be a list of str or one of"),
        (["context_size=3.5"], "context_size must be int, got 3.5 (float)"),
        (["logger.log_to_wandb=3"], "logger.log_to_wandb must be bool, got 3 (int)"),
        (["sae.routing=medium"], "sae.routing must be one of 'hard', 'soft', got 'medium'"),
        (["output_path=[a]"], "output_path must be str or null, got ['a'] (list)"),
        (["model_path=3"], "model_path must be str or null, got 3 (int)"),
    ],
)
def test_a_wrong_type_names_the_field_and_the_expected_type(tmp_path, overrides, message):
    with pytest.raises(TypeError) as e:
        load_run_config(write_yaml(tmp_path), overrides)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["not_a_field=1"], "unknown config fields ['not_a_field']"),
        (["sae.kk=1"], "unknown sae fields ['kk']"),
        (["sae.architecture=standard"], "sae.architecture must be 'routesae'"),
        (["corpus=wiki"], "corpus must be one of"),
        (["sae.k=100"], "k must be <= d_sae, got k=100 > d_sae=64"),
        (["sae.hook_names=[blocks.0.hook_resid_post]"], "hook_names must list at least 2"),
        (["output_path=' '"], "output_path must be a folder path, or null to save nothing"),
        (["n_batches_in_buffer=1"], "raise n_batches_in_buffer to at least 5"),
        (["training_tokens=64"], "training_tokens=64 must be >= train_batch_size_tokens=128"),
        (["device=cuda"], "CUDA requested (device='cuda') but torch.cuda.is_available() is False"),
        (
            ["llm_device=cuda:1"],
            "CUDA requested (llm_device='cuda:1') but torch.cuda.is_available() is False",
        ),
        (["device=gpu0"], "device must be a torch device"),
        (["model_path=/no/such/model"], "/no/such/model does not exist"),
        (
            ["model_path=null", "model_class_name=HookedMamba"],
            "sae.hook_names: paper and an omitted sae.d_in",
        ),
        (["use_cached_activations=true"], "needs cached_activations_path"),
    ],
)
def test_model_free_checks_fail_before_anything_loads(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError) as e:
        load_run_config(write_yaml(tmp_path), overrides)
    assert message in str(e.value)


def test_malformed_yaml_names_the_file_or_the_set_argument(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sae: {k: 4\nlr: 0.1\n")
    with pytest.raises(ValueError, match=f"{bad} is not valid YAML: .*line 2, column 3"):
        load_run_config(bad)
    with pytest.raises(ValueError, match=r"--set 'sae.hook_names=\[a, b': the value is not valid YAML"):
        load_run_config(write_yaml(tmp_path), ["sae.hook_names=[a, b"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_run_config(tmp_path / "missing.yaml")


def test_set_refuses_an_empty_value_or_a_missing_equals():
    with pytest.raises(ValueError, match="--set 'output_path=' has no value; write output_path=null"):
        apply_overrides({}, ["output_path="])
    with pytest.raises(ValueError, match="--set expects key=value, got 'oops'"):
        apply_overrides({}, ["oops"])
    data = {"sae": {"k": 4}}
    assert apply_overrides(data, ["sae.k=8", "output_path=null"]) == {"sae": {"k": 8}, "output_path": None}
    assert data == {"sae": {"k": 4}}  # the caller's mapping is left alone


def test_a_cached_run_takes_hooks_d_in_and_model_path_from_the_cache(tmp_path):
    """No model is read at all: the model folder may be gone; the cache's metadata fills in what it knew."""
    cache = tmp_path / "acts"
    cache.mkdir()
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    meta = CacheMetadata(
        model_name="tiny",
        hook_names=hooks,
        d_in=24,
        dtype="float32",
        storage_dtype="float32",
        context_size=32,
        seqpos_slice=[None],
        training_context_size=32,
        prepend_bos=True,
        n_sequences=4,
        n_tokens=128,
        n_kept_tokens=120,
        special_token_ids=[0, 1],
        model_path="/models/tiny",
    )
    (cache / METADATA_FILENAME).write_text(json.dumps(asdict(meta)))
    data = yaml.safe_load(write_yaml(tmp_path).read_text())
    del data["model_path"]
    run = parse_run_config({**data, "use_cached_activations": True, "cached_activations_path": str(cache)})
    assert run.runner.sae.hook_names == hooks and run.runner.sae.d_in == 24
    assert run.runner.model_name == "tiny" and run.model_path == "/models/tiny"
    assert run.runner.sae.metadata.model_path == "/models/tiny"


def test_wandb_without_credentials_is_one_line_before_anything_loads(tmp_path, monkeypatch):
    """SAELens's default log_to_wandb=True with no key and no offline mode: refused at config time, naming the
    fix; an API key, WANDB_MODE=offline or a netrc entry (`wandb login`) lets it through."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    path = write_yaml(tmp_path, logger={})  # SAELens's defaults: log_to_wandb true
    with pytest.raises(ValueError, match="set logger.log_to_wandb: false") as e:
        load_run_config(path)
    assert "\n" not in str(e.value)
    assert not load_run_config(path, ["logger.log_to_wandb=false"]).runner.logger.log_to_wandb
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    assert load_run_config(path).runner.logger.log_to_wandb
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert load_run_config(path).runner.logger.log_to_wandb


def test_an_unreachable_model_config_is_one_line(tmp_path, monkeypatch):
    """Offline, TransformerLens's config lookup raises the Hub's multi-line OSError: one line naming the
    fix."""

    def offline(name):
        raise OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection"
        )

    monkeypatch.setattr("transformer_lens.loading_from_pretrained.get_pretrained_model_config", offline)
    with pytest.raises(ValueError, match="model_name 'gpt2': its config could not be read") as e:
        load_run_config(write_yaml(tmp_path), ["model_path=null", "model_name=gpt2"])
    assert "\n" not in str(e.value) and "model_path: smollm2" in str(e.value)
