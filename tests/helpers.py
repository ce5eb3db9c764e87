"""Test helpers (plain functions and constants; fixtures live in conftest.py): small RouteSAE configs, tiny
models and datasets, the official parity files (copied from the reference run), CLI subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

import sae_lens_routing  # noqa: F401  (registers the architecture)
from sae_lens_routing import RouteSAE, RouteSAEConfig, RouteTrainingSAE, RouteTrainingSAEConfig
from sae_lens_routing.interpret.contexts import InterpretContexts

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_CKPT = FIXTURES / "official_routesae_checkpoint.pt"
OFFICIAL_VECTORS = FIXTURES / "official_routesae_vectors.safetensors"
HOOKS4 = [f"blocks.{i}.hook_resid_post" for i in range(4)]


def make_training_sae(
    d_in: int = 16, d_sae: int = 64, k: int = 4, n_layers: int = 4, **kw
) -> RouteTrainingSAE:
    torch.manual_seed(0)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    return RouteTrainingSAE(RouteTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, hook_names=hooks, **kw))


def tiny_model(n_layers: int = 4, d_model: int = 16, n_ctx: int = 32, d_vocab: int = 50, seed: int = 0):
    """A random HookedTransformer small enough to run thousands of tokens per second on one CPU core."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=4,
        n_heads=d_model // 4,
        d_mlp=2 * d_model,
        d_vocab=d_vocab,
        act_fn="relu",
        normalization_type="LN",
        seed=seed,
        device="cpu",  # TransformerLens defaults to CUDA when present; the suite's SAEs live on the CPU
    )
    return HookedTransformer(cfg).eval()


def token_dataset(n_rows: int = 64, context: int = 16, d_vocab: int = 50, bos: int = 0, seed: int = 0):
    """A pre-tokenised local `datasets.Dataset` whose rows start with a BOS token id."""
    from datasets import Dataset

    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(1, d_vocab, (n_rows, context), generator=gen)
    rows[:, 0] = bos
    return Dataset.from_dict({"tokens": rows.tolist()})


def route_runner_cfg(tmp_path, hook_names=None, **overrides):
    """A small `LanguageModelSAERunnerConfig` for a RouteSAE on `tiny_model()`."""
    from sae_lens import LanguageModelSAERunnerConfig
    from sae_lens.config import LoggingConfig

    sae_kw = {"end_to_end_tokens": 0, **overrides.pop("sae", {})}  # the default phase: tests that ask for it
    sae = RouteTrainingSAEConfig(
        d_in=16,
        d_sae=32,
        k=4,
        hook_names=hook_names or [f"blocks.{i}.hook_resid_post" for i in (1, 2)],
        **sae_kw,
    )
    base = dict(
        sae=sae,
        model_name="tiny",
        dataset_path="",
        is_dataset_tokenized=True,
        context_size=16,
        streaming=False,
        training_tokens=2048,
        train_batch_size_tokens=128,
        store_batch_size_prompts=4,
        n_batches_in_buffer=16,
        device="cpu",
        dtype="float32",
        exclude_special_tokens=[0],
        lr=1e-3,
        logger=LoggingConfig(log_to_wandb=False),
        output_path=str(tmp_path / "out"),
        verbose=False,
    )
    base.update(overrides)
    return LanguageModelSAERunnerConfig(**base)


def free_port() -> int:
    """A free loopback TCP port for a process group's rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_hf_llama_folder(folder, vocab_words: int = 400, seed: int = 0, config_class=None):
    """A random Llama-architecture Hugging Face model + a word-level tokenizer saved in `folder` (offline).

    `config_class` (a Llama-like transformers config, e.g. GraniteConfig) picks another architecture."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from sae_lens_routing.offline.corpus import python_topics_texts

    words: dict[str, int] = {}
    for text in python_topics_texts():
        for word in text.split():
            if len(words) < vocab_words:
                words.setdefault(word, len(words))
    vocab = {"<bos>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for w, i in words.items()}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<eos>"
    )
    torch.manual_seed(seed)
    cfg = (config_class or LlamaConfig)(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
    )
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


SPLICE_HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


def make_sae(routing: str = "hard", seed: int = 0) -> RouteSAE:
    torch.manual_seed(seed)
    sae = RouteSAE(RouteSAEConfig(d_in=16, d_sae=48, k=6, hook_names=SPLICE_HOOKS, routing=routing))
    with torch.no_grad():
        sae.W_router.mul_(20)  # spread tokens over the layers
    return sae


def exact_sae() -> RouteSAE:
    """d_sae = 2 d_in, W_enc = [I, -I], W_dec = [I; -I], k = d_sae, ReLU: decodes exactly."""
    sae = RouteSAE(RouteSAEConfig(d_in=16, d_sae=32, k=32, hook_names=SPLICE_HOOKS))
    eye = torch.eye(16)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def refuse_loaders(monkeypatch) -> None:
    """Make every model and corpus loader of the package raise: a config error comes before any of them."""
    from sae_lens_routing.training import run_config

    def refuse(*args, **kwargs):
        raise AssertionError("a model or corpus loader was called")

    monkeypatch.setattr(run_config, "load_model_and_dataset", refuse)
    monkeypatch.setattr("sae_lens_routing.offline.local_model.load_local_model", refuse)
    monkeypatch.setattr("sae_lens_routing.offline.corpus.load_corpus", refuse)


def write_config(tmp_path, **overrides):
    """A small run YAML on the tiny Llama folder (built only when `model_path` is not overridden)."""
    config = {
        "model_path": overrides.get("model_path") or str(tiny_hf_llama_folder(tmp_path / "model")),
        "corpus": "python-topics",
        "context_size": 32,
        "training_tokens": 2048,
        "train_batch_size_tokens": 128,
        "store_batch_size_prompts": 4,
        "n_batches_in_buffer": 8,
        "exclude_special_tokens": True,
        "lr": 0.003,
        "device": "cpu",
        "output_path": str(tmp_path / "out"),
        "logger": {"log_to_wandb": False},
        "sae": {"d_sae": 64, "k": 4, "hook_names": "paper"},
    }
    config.update(overrides)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sae_lens_routing", *args], capture_output=True, text=True, env=env, **kwargs
    )


def synthetic_contexts(n_features: int = 4, n_heldout_each: int = 4) -> InterpretContexts:
    """Counted features (on SPLICE_HOOKS) with paper contexts and detection excerpts, all texts distinct."""

    features, shares, detection = {}, {}, {}
    for f in range(n_features):
        features[f] = [
            {
                "token": f"tok{f}",
                "activation": 20.0 - i,
                "layer": SPLICE_HOOKS[f % 3],
                "context": f"feature {f} ctx {i}",
            }
            for i in range(5)
        ]
        shares[f] = [1.0 if i == f % 3 else 0.0 for i in range(3)]
        detection[f] = {
            "explain": [{"text": f"top excerpt {f}.{i} <<x>>", "activation": 9.0} for i in range(3)],
            "heldout": [
                {"text": f"held {f}.{i} on", "label": 1, "quantile": i % 2 + 1, "activation": 2.0}
                for i in range(n_heldout_each)
            ]
            + [
                {"text": f"held {f}.{i} off", "label": 0, "quantile": None, "activation": 0.0}
                for i in range(n_heldout_each)
            ],
        }
    return InterpretContexts(
        SPLICE_HOOKS, features, shares, detection, n_latents_with_contexts=n_features + 3
    )
