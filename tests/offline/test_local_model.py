"""Offline models: a local Hugging Face Llama folder and the bundled SmolLM2-135M GGUF; offline corpora."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_hf_llama_folder

from sae_lens_routing.offline.corpus import load_corpus
from sae_lens_routing.offline.local_model import load_local_model


def test_local_hf_folder_matches_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tiny_hf_llama_folder(tmp_path / "tiny")
    model = load_local_model(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tokens = torch.randint(3, 100, (2, 12))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens, output_hidden_states=True)
    torch.testing.assert_close(ours, theirs.logits, atol=1e-4, rtol=1e-4)
    assert model.cfg.rotary_base == 100000.0
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    torch.testing.assert_close(
        cache["blocks.1.hook_resid_post"], theirs.hidden_states[2], atol=1e-4, rtol=1e-4
    )


def test_bad_model_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_local_model(tmp_path / "nope")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"must be a \.gguf"):
        load_local_model(tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_local_model(tmp_path / "empty")


def test_corpora():
    topics = load_corpus("python-topics")
    assert len(topics) > 50 and "text" in topics.column_names
    assert load_corpus("python-topics")["text"][:3] == topics["text"][:3]  # deterministic
    with pytest.raises(ValueError, match="corpus must be one of"):
        load_corpus("wikipedia")


@pytest.mark.real_model
def test_bbc_corpus():
    bbc = load_corpus("bbcnews")
    assert len(bbc) == 2225 - 98  # exact duplicates dropped
    assert len(set(bbc["text"])) == len(bbc)


@pytest.fixture(scope="module")
def smollm2():
    return load_local_model("smollm2")


@pytest.mark.real_model
def test_smollm2_is_sane(smollm2):
    assert smollm2.cfg.n_layers == 30 and smollm2.cfg.d_model == 576 and smollm2.cfg.rotary_base == 100000.0
    assert smollm2.tokenizer.bos_token == "<|endoftext|>"
    out = smollm2.generate("The capital of France is", max_new_tokens=2, do_sample=False, verbose=False)
    assert out.startswith("The capital of France is Paris"), out


@pytest.mark.real_model
def test_smollm2_residual_matches_hf_hidden_states(smollm2):
    from transformers import AutoModelForCausalLM

    from sae_lens_routing.offline.local_model import gguf_to_hf_folder, smollm2_gguf_path

    hf = AutoModelForCausalLM.from_pretrained(gguf_to_hf_folder(smollm2_gguf_path()), local_files_only=True)
    tokens = smollm2.to_tokens("The BBC reported that the markets rose sharply on Monday.")
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
        _, cache = smollm2.run_with_cache(tokens, names_filter="blocks.8.hook_resid_post")
    torch.testing.assert_close(cache["blocks.8.hook_resid_post"], hidden[9], atol=1e-3, rtol=1e-3)


def _check_sae_transformer(model, plain, hook):
    """A HookedSAETransformer equal to the plain model, that runs a stock SAELens SAE with `run_with_saes`."""
    from sae_lens import HookedSAETransformer
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    assert isinstance(model, HookedSAETransformer) and not isinstance(plain, HookedSAETransformer)
    tokens = plain.to_tokens("The BBC reported that the markets rose")
    torch.testing.assert_close(model(tokens), plain(tokens))
    sae = TopKSAE(TopKSAEConfig(d_in=model.cfg.d_model, d_sae=64, k=4))
    sae.cfg.metadata.hook_name = hook
    sae.use_error_term = True  # the error term restores the activation: the logits stay the plain model's
    torch.testing.assert_close(model.run_with_saes(tokens, saes=[sae]), plain(tokens), atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="model_class must be HookedTransformer or a subclass"):
        load_local_model("smollm2", model_class=dict)


def test_local_model_loads_as_hooked_sae_transformer(tmp_path):
    from sae_lens import HookedSAETransformer

    folder = tiny_hf_llama_folder(tmp_path / "m")
    model = load_local_model(folder, model_class=HookedSAETransformer)
    _check_sae_transformer(model, load_local_model(folder), "blocks.1.hook_resid_post")


@pytest.mark.real_model
def test_smollm2_loads_as_hooked_sae_transformer(smollm2):
    from sae_lens import HookedSAETransformer

    model = load_local_model("smollm2", model_class=HookedSAETransformer)
    _check_sae_transformer(model, smollm2, "blocks.8.hook_resid_post")


def test_training_never_reads_the_evaluated_documents(tmp_path, monkeypatch):
    """Document-level split: a run's corpus is the "train" documents, `corpus_tokens` (evaluation, dashboards,
    the demo's evaluate step) reads only "heldout" ones, whatever the shuffling seed."""
    from helpers import write_config

    from sae_lens_routing.offline.corpus import corpus_tokens, tokenized_corpus
    from sae_lens_routing.training.run_config import load_model_and_dataset, load_run_config

    run = load_run_config(write_config(tmp_path))
    model, dataset = load_model_and_dataset(run)
    assert len(next(iter(dataset))["input_ids"]) == run.runner.context_size  # pre-tokenised rows
    train, every = set(load_corpus("python-topics", split="train")["text"]), load_corpus("python-topics")
    every = every["text"]
    heldout = set(load_corpus("python-topics", seed=5, split="heldout")["text"])
    assert train and heldout and not train & heldout and train | heldout == set(every)
    assert len(heldout) == round(0.1 * len(every))
    read: list[str] = []

    class Spy:  # the model as the corpus functions see it, recording every text it tokenises
        tokenizer = model.tokenizer

        def to_tokens(self, text, **kwargs):
            read.append(text)
            return model.to_tokens(text, **kwargs)

    rows = list(tokenized_corpus(Spy(), "python-topics", run.runner))
    assert rows == list(dataset) and read and set(read) <= train
    read.clear()
    assert len(corpus_tokens(Spy(), "python-topics", 4, 8, seed=3)) == 4 and read and set(read) <= heldout
    with pytest.raises(ValueError, match="split must be one of"):
        load_corpus("python-topics", split="test")


def test_dequantized_save_reloads_with_tied_embeddings(tmp_path):
    """The GGUF cache's own writer (transformers 5 refuses `save_pretrained` there), on a tied tiny Llama."""
    from transformers import AutoModelForCausalLM

    from sae_lens_routing.offline.local_model import save_dequantized

    hf = AutoModelForCausalLM.from_pretrained(tiny_hf_llama_folder(tmp_path / "tiny"), local_files_only=True)
    save_dequantized(hf, tmp_path / "saved")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", local_files_only=True)
    tokens = torch.randint(3, 100, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(again(tokens).logits, hf(tokens).logits)


def test_pretokenized_corpus_feeds_the_store_the_same_rows_without_warnings(tmp_path):
    """The bundled corpus goes to SAELens's store as the rows it would tokenise on the fly, and the store
    warns neither "not tokenized" nor "fewer samples" (rows compared with tokens)."""
    import warnings

    from helpers import write_config

    from sae_lens_routing.training.run_config import load_model_and_dataset, load_run_config
    from sae_lens_routing.training.store import MultiLayerActivationsStore

    run = load_run_config(write_config(tmp_path, training_tokens=50_000))
    model, tokenized = load_model_and_dataset(run)
    text = load_corpus("python-topics", split="train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = MultiLayerActivationsStore.from_route_config(model, run.runner, tokenized)
    assert not [str(w.message) for w in caught]
    theirs = MultiLayerActivationsStore.from_route_config(model, run.runner, text)
    for _ in range(3):
        torch.testing.assert_close(ours.get_batch_tokens(), theirs.get_batch_tokens())
