"""SAELens's uploader plus a model card, so a Hub visitor sees the routing without loading anything."""

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCardData
from huggingface_hub.repocard import metadata_load
from huggingface_hub.utils import HFValidationError, validate_repo_id
from sae_lens.constants import RUNNER_CFG_FILENAME, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface

from sae_lens_routing.analysis.evals import render_routing_share_chart
from sae_lens_routing.atomic import atomic_write_bytes
from sae_lens_routing.interpret.results import FILENAME as INTERPRETABILITY_FILENAME
from sae_lens_routing.interpret.results import read_result
from sae_lens_routing.loading.loaders import read_cfg_json, read_checked_sae_folder, read_json_object
from sae_lens_routing.saes.config import ARCHITECTURE, refuse
from sae_lens_routing.saes.routed_metrics import SHARE_PREFIX
from sae_lens_routing.saes.routed_metrics import routing_shares as shares_in_metrics

SAE_FILES = (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME, RUNNER_CFG_FILENAME)
CARD_FILENAME = "README.md"
CHART_FILENAME = "routing_share.png"
METRICS_FILENAME = "training_metrics.json"
CARD_DATA = ModelCardData(library_name="saelens", tags=["sae_lens", "sae-lens-routing", "routesae",
                                                       "sparse-autoencoder"])
_ALIASES = {"num_dead_features": "dead_features", "dead_latents": "dead_features"}
_NOT_METRICS = ("training_tokens", "training_steps", "metrics/total_tokens_evaluated")


def normalize_shares(shares: Sequence[float] | Mapping[str, float], hook_names: Sequence[str]) -> list[float]:
    mapping = isinstance(shares, Mapping)
    values = [float(shares.get(h, 0.0)) for h in hook_names] if mapping else [float(s) for s in shares]
    unknown = mapping and set(shares) - set(hook_names)
    finite = all(math.isfinite(v) and v >= 0 for v in values)
    if len(values) != len(hook_names) or unknown or not finite or abs(sum(values) - 1.0) > 0.02:
        raise ValueError(f"routing_shares must sum to 1 (fractions >= 0) with one value per routed hook "
                         f"({len(hook_names)}), got {len(shares)}: {shares}")
    return values


def card_metrics(*sources: Mapping[str, Any] | None) -> dict[str, Any]:
    """One row per quantity (`sparsity/l0` is `l0`), later sources winning; shares, tokens shown elsewhere."""
    return {_ALIASES.get(k.rsplit("/", 1)[-1], k.rsplit("/", 1)[-1]): v for source in sources
            for k, v in (source or {}).items()
            if k not in _NOT_METRICS and not k.startswith(SHARE_PREFIX) and v is not None}


def card_lines(data: dict[str, Any]) -> list[str]:
    summary = data["summary"]
    lines = ["## Interpretability (LLM judge)", "", f"Judge `{data.get('judge_model')}`, "
             f"{summary.get('n_features', 0)} sampled of {data.get('n_features_counted')} counted features "
             f"(seed {data.get('seed')}).", ""]
    for name, key, what in (("paper", "mean_score", "paper rubric: mean score"),
                            ("detection", "mean_balanced_accuracy", "detection: mean balanced accuracy")):
        if b := summary.get(name):
            cats = [f"{c} {v['count']} (mean {v['mean_score']})" for c, v in b.get("categories", {}).items()
                    if v["count"]]
            per = ", ".join(f"`{h}` {v[key]} (n={v['n_scored']})" for h, v in b["per_layer"].items())
            lines += [f"- {what} {b[key]} over {b['n_scored']} features ({b['n_unparsed']} answers unparsed)"
                      + (f"; {', '.join(cats)}" if cats else ""), f"- {name} per routed layer: {per}"]
    return lines


def write_model_card(folder: str | Path, *, repo_id: str, sae_id: str,
                     routing_shares: Sequence[float] | Mapping[str, float] | None = None,
                     metrics: Mapping[str, Any] | None = None, training_tokens: int | None = None,
                     chart_prefix: str = "", write: bool = True) -> tuple[Path, str]:
    """Never over a hand-written README.md; returns its path and the card text for the repo root."""
    folder = Path(folder)
    cfg = read_cfg_json(folder)
    run = read_json_object(folder / METRICS_FILENAME) if (folder / METRICS_FILENAME).is_file() else {}
    routing_shares = routing_shares if routing_shares is not None else shares_in_metrics(run) or None
    card = folder / CARD_FILENAME
    ours = card.is_file() and "sae-lens-routing" in ((metadata_load(card) or {}).get("tags") or [])
    theirs = [p for p in (card, folder / CHART_FILENAME) if p.exists() and not ours]
    if theirs and (card in theirs or routing_shares is not None):
        raise FileExistsError(f"{', '.join(map(str, theirs))} already exists and was not written by "
                              "sae-lens-routing; the model card would replace it: move it away")
    hooks = list(cfg["hook_names"])
    shares = None if routing_shares is None else normalize_shares(routing_shares, hooks)
    if shares is not None and write:
        render_routing_share_chart(shares, hooks, folder / CHART_FILENAME)
    runner = folder / RUNNER_CFG_FILENAME
    for source in (read_json_object(runner) if runner.is_file() else {}, run):
        if training_tokens is None and isinstance(source.get("training_tokens"), (int, float)):
            training_tokens = int(source["training_tokens"])
    meta = dict(cfg.get("metadata") or {})
    model = meta.get("model_name") or "unknown"
    final = card_metrics({k: meta.get(k) for k in ("l0", "num_dead_features")}, run, metrics)
    rows = [f"| {k} | {f'{v:.4g}' if isinstance(v, float) else v} |" for k, v in final.items()]
    chart = "Not recorded." if shares is None else (
        f"![share of tokens routed to each layer]({CHART_FILENAME})\n\n"
        + " | ".join(f"`{h}` {100 * s:.1f}%" for h, s in zip(hooks, shares, strict=True)))
    interp = folder / INTERPRETABILITY_FILENAME  # written there by `interpret --out <the SAE folder>`
    judged = "\n".join(card_lines(read_result(interp))) + "\n\n" if interp.is_file() else ""
    text = f"""---
{CARD_DATA.to_yaml()}
---

# RouteSAE `{sae_id}` for {model}

A routed sparse autoencoder (RouteSAE, Shi et al. 2025, arXiv 2503.08200): one shared TopK SAE reads the \
residual stream at several layers, and a router picks, per token, the layer it encodes. Made with the \
sae-lens-routing plugin for [SAELens](https://github.com/decoderesearch/SAELens).

| | |
|---|---|
| model | `{model}` |
| routed hooks (L={len(hooks)}) | {", ".join(f"`{h}`" for h in hooks)} |
| d_in / d_sae | {cfg["d_in"]} / {cfg["d_sae"]} |
| k (TopK) | {cfg["k"]} |
| routing / router input | {cfg.get("routing", "hard")} / {cfg.get("router_input", "sum")} |
| training tokens | {f"{training_tokens:,}" if training_tokens else "not recorded"} |
| dtype | {cfg.get("dtype", "float32")} |

## Final metrics

{chr(10).join(["| metric | value |", "|---|---|", *rows]) if final else "Not recorded."}

## Routing share

{chart}

{judged}## Load it

```python
import sae_lens_routing  # registers the 'routesae' architecture with SAELens
from sae_lens import SAE

sae = SAE.from_pretrained("{repo_id}", "{sae_id}")
out = sae.forward_routed(acts)  # acts: [..., L, d_in], the routed hooks' activations stacked
```

Or, with integrity checks on load: `sae_lens_routing.load_route_sae("{repo_id}", "{sae_id}")`.
"""
    if write:
        atomic_write_bytes(card, text.encode("utf-8"))
    return card, text.replace(f"]({CHART_FILENAME})", f"]({chart_prefix}{CHART_FILENAME})")


def upload_route_sae(path: str | Path, repo_id: str, sae_id: str | None = None, *, revision: str = "main",
                     routing_shares: Sequence[float] | Mapping[str, float] | None = None,
                     metrics: Mapping[str, Any] | None = None, training_tokens: int | None = None,
                     root_card: bool | None = None, show_progress: bool = False,
                     dry_run: bool = False) -> list[str]:
    """`root_card` None: the card is also the repo's README.md if it has none yet; returns repo paths."""
    folder = Path(path)
    try:
        sae_id = sae_id if sae_id is not None else folder.resolve(strict=True).name
        validate_repo_id(repo_id)
        repo_ok = repo_id.count("/") == 1
    except (OSError, RuntimeError) as e:  # missing, or a symlink loop
        raise ValueError(f"{folder} is not a readable SAE folder ({e}); give its folder") from None
    except HFValidationError:
        repo_ok = False
    cfg, _, _ = read_checked_sae_folder(folder)
    refuse(["; ".join(text for bad, text in (
        (not repo_ok, f"repo_id must look like 'org/name', got {repo_id!r}"),
        (not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", sae_id) or ".." in sae_id.split("/"),
         f"sae_id must be a relative folder path in the repo (\\w, ., -, /), got {sae_id!r}"),
        (cfg["architecture"] != ARCHITECTURE, f"{folder}: architecture {cfg['architecture']!r}, expected "
         f"{ARCHITECTURE!r}"),
    ) if bad)])
    card, root_text = write_model_card(folder, repo_id=repo_id, sae_id=sae_id, routing_shares=routing_shares,
                                       metrics=metrics, training_tokens=training_tokens,
                                       chart_prefix=f"{sae_id}/", write=not dry_run)
    files = [f"{sae_id}/{name}" for name in SAE_FILES if (folder / name).is_file()]
    card_files: dict[str, Any] = {f"{sae_id}/{CARD_FILENAME}": str(card)}
    if f"]({sae_id}/{CHART_FILENAME})" in root_text:  # the card shows routing shares
        card_files[f"{sae_id}/{CHART_FILENAME}"] = str(folder / CHART_FILENAME)
    if dry_run:
        return sorted([*files, *card_files, *[CARD_FILENAME] * (root_card is not False)])
    upload_saes_to_huggingface({sae_id: folder}, repo_id, hf_revision=revision, show_progress=show_progress,
                               add_default_readme=False)
    api = HfApi()
    if root_card or (root_card is None and not api.file_exists(repo_id, CARD_FILENAME, revision=revision)):
        card_files[CARD_FILENAME] = root_text.encode("utf-8")
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=f) for p, f in card_files.items()]
    api.create_commit(repo_id=repo_id, operations=operations, commit_message=f"Add model card for {sae_id}",
                      revision=revision)
    return sorted([*files, *card_files])
