"""Publish a routed SAE to the Hugging Face Hub with SAELens's own uploader, plus a model card.

The SAE files go through SAELens's unchanged `upload_saes_to_huggingface` (cfg.json, sae_weights.safetensors,
sparsity.safetensors, runner_cfg.json into `<repo>/<sae_id>/`), so the repo loads with a plain
`SAE.from_pretrained(repo_id, sae_id)` after `import sae_lens_routing`. That uploader only sends those four
files, so the card (README.md, routing_share.png) follows in one more commit through `HfApi.create_commit`:
into `<sae_id>/`, and to the repo root when the repo has no README yet (the Hub shows the root README).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi
from sae_lens.constants import RUNNER_CFG_FILENAME, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface

from sae_lens_routing.hub.model_card import (
    CARD_FILENAME,
    CHART_FILENAME,
    read_training_metrics,
    write_model_card,
)
from sae_lens_routing.loading.loaders import read_checked_sae_folder
from sae_lens_routing.saes.config import ARCHITECTURE
from sae_lens_routing.saes.routed_metrics import routing_shares as shares_in_metrics

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SAE_ID_RE = re.compile(r"^[\w.-]+(/[\w.-]+)*$")
SAE_FILES = (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME, RUNNER_CFG_FILENAME)


def validate_repo_and_sae_id(repo_id: str, sae_id: str) -> None:
    """repo_id must be 'org/name'; sae_id a relative folder path (it becomes `path_in_repo`)."""
    if not isinstance(repo_id, str) or not _REPO_ID_RE.match(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    if not isinstance(sae_id, str) or not _SAE_ID_RE.match(sae_id) or ".." in sae_id.split("/"):
        raise ValueError(
            f"sae_id must be a relative folder path in the repo (letters, digits, '_', '-', '.', '/'), got {sae_id!r}"
        )


def planned_upload(path: str | Path, sae_id: str, *, with_chart: bool, root_card: bool) -> list[str]:
    """The `path_in_repo` of every file an upload of this folder sends, sorted."""
    folder = Path(path)
    paths = [f"{sae_id}/{name}" for name in SAE_FILES if (folder / name).is_file()]
    paths.append(f"{sae_id}/{CARD_FILENAME}")
    if with_chart:
        paths.append(f"{sae_id}/{CHART_FILENAME}")
    if root_card:
        paths.append(CARD_FILENAME)
    return sorted(paths)


def upload_route_sae(
    path: str | Path,
    repo_id: str,
    sae_id: str | None = None,
    *,
    revision: str = "main",
    routing_shares: Sequence[float] | Mapping[str, float] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training_tokens: int | None = None,
    root_card: bool | None = None,
    show_progress: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Check the folder, write its model card, upload it; returns the paths written in the repo.

    `path` is what `save_inference_model` (or the SAELens runner) wrote. `sae_id` defaults to the folder's
    name. The card shows the run's metrics and routing shares from the folder's training_metrics.json (what
    `RouteSAETrainingRunner` saves); `metrics` and `routing_shares` replace them. `root_card`: also publish the card
    as the repo's README.md (None: only if the repo has none yet).
    `dry_run`: check everything, but write nothing and contact nothing; returns the paths an upload would write (the
    root README.md included unless `root_card` is False, as the Hub is not asked whether it has one).
    Credentials are huggingface_hub's usual ones (`HF_TOKEN` or `huggingface-cli login`).
    """
    folder = Path(path)
    try:
        resolved = folder.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # missing, or a symlink loop
        raise ValueError(f"{folder} is not a readable SAE folder ({e}); give the folder the SAE was saved to") from None
    sae_id = sae_id if sae_id is not None else resolved.name
    validate_repo_and_sae_id(repo_id, sae_id)
    cfg, _, _ = read_checked_sae_folder(folder)
    if cfg["architecture"] != ARCHITECTURE:
        raise ValueError(
            f"{folder}: architecture is {cfg['architecture']!r}; upload_route_sae uploads 'routesae' SAEs"
        )
    if routing_shares is None:  # the run's own shares, as the card shows them
        routing_shares = shares_in_metrics(read_training_metrics(folder)) or None
    card, root_text = write_model_card(
        folder,
        repo_id=repo_id,
        sae_id=sae_id,
        routing_shares=routing_shares,
        metrics=metrics,
        training_tokens=training_tokens,
        chart_prefix=f"{sae_id}/",
        write=not dry_run,
    )
    with_chart = routing_shares is not None
    if dry_run:
        return planned_upload(folder, sae_id, with_chart=with_chart, root_card=root_card is not False)
    upload_saes_to_huggingface(
        {sae_id: folder}, repo_id, hf_revision=revision, show_progress=show_progress, add_default_readme=False
    )
    api = HfApi()
    if root_card is None:
        root_card = not api.file_exists(repo_id, CARD_FILENAME, revision=revision)
    operations = [CommitOperationAdd(path_in_repo=f"{sae_id}/{CARD_FILENAME}", path_or_fileobj=str(card))]
    if with_chart:
        operations.append(
            CommitOperationAdd(
                path_in_repo=f"{sae_id}/{CHART_FILENAME}", path_or_fileobj=str(folder / CHART_FILENAME)
            )
        )
    if root_card:
        operations.append(
            CommitOperationAdd(path_in_repo=CARD_FILENAME, path_or_fileobj=root_text.encode("utf-8"))
        )
    api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=f"Add model card for {sae_id}",
        revision=revision,
        repo_type="model",
    )
    return planned_upload(folder, sae_id, with_chart=with_chart, root_card=root_card)
