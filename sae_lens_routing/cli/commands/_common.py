"""Arguments and loading shared by the analysis commands (evaluate, steer, dashboard...)."""

from __future__ import annotations

import argparse
from typing import Any

import torch


def add_sae_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sae", required=True, help="a saved RouteSAE folder (cfg.json + sae_weights.safetensors)"
    )
    parser.add_argument(
        "--model-path", help="local GGUF / HF folder / 'smollm2'; default: the model the SAE was trained on"
    )
    parser.add_argument("--device", default="cpu")


def load_sae_and_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from sae_lens import SAE

    import sae_lens_routing  # noqa: F401  (registers the architecture)

    sae = SAE.load_from_disk(args.sae, device=args.device)
    if sae.cfg.architecture() != "routesae":
        raise ValueError(f"--sae must be a RouteSAE folder, got architecture {sae.cfg.architecture()!r}")
    model_path = args.model_path or sae.cfg.metadata.model_path
    if model_path:
        from sae_lens_routing.offline.local_model import load_local_model

        model = load_local_model(model_path, device=args.device)
    else:
        from sae_lens.load_model import load_model

        model = load_model("HookedTransformer", sae.cfg.metadata.model_name, device=args.device)
    return sae, model


def corpus_tokens(
    model: Any, corpus: str, n_sequences: int, context_size: int, seed: int = 1
) -> torch.Tensor:
    """[n_sequences, context_size] tokens of an offline corpus, each row starting with BOS."""
    from sae_lens_routing.offline.corpus import load_corpus

    rows = []
    for text in load_corpus(corpus, seed=seed)["text"]:
        toks = model.to_tokens(text, prepend_bos=True)[0]
        if len(toks) >= context_size:
            rows.append(toks[:context_size])
        if len(rows) == n_sequences:
            break
    if not rows:
        raise ValueError(f"corpus {corpus!r} has no document of >= {context_size} tokens")
    return torch.stack(rows)
