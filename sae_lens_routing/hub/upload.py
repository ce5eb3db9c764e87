"""Publish a routed SAE with SAELens's own uploader (so `SAE.from_pretrained` loads it), then its model card.

SAELens's uploader sends only the SAE files, so the card follows in one more commit: into `<sae_id>/`, and to
the repo root when the repo has no README yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id
from sae_lens.constants import RUNNER_CFG_FILENAME, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface

from sae_lens_routing.hub.model_card import CARD_FILENAME, CHART_FILENAME, write_model_card
from sae_lens_routing.loading.loaders import read_checked_sae_folder
from sae_lens_routing.saes.config import ARCHITECTURE

SAE_FILES = (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME, RUNNER_CFG_FILENAME)


def upload_route_sae(path: str | Path, repo_id: str, sae_id: str | None = None, *, revision: str = "main",
                     routing_shares: Sequence[float] | Mapping[str, float] | None = None,
                     metrics: Mapping[str, Any] | None = None, training_tokens: int | None = None,
                     root_card: bool | None = None, show_progress: bool = False,
                     dry_run: bool = False) -> list[str]:
    """Check the folder, write its model card, upload both; returns the paths written in the repo, sorted.

    `sae_id` defaults to the folder's name; `root_card` None: also the repo's README.md if it has none yet.
    `dry_run` checks everything, writes and sends nothing (plans the root README unless `root_card` False)."""
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
    problems = [text for bad, text in (
        (not repo_ok, f"repo_id must look like 'org/name', got {repo_id!r}"),
        (not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", sae_id) or ".." in sae_id.split("/"),
         f"sae_id must be a relative folder path in the repo (\\w, ., -, /), got {sae_id!r}"),
        (cfg["architecture"] != ARCHITECTURE, f"{folder}: architecture {cfg['architecture']!r}, expected "
         f"{ARCHITECTURE!r}"),
    ) if bad]
    if problems:
        raise ValueError("; ".join(problems))
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
