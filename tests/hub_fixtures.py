"""Test helpers for the Hub work: a trained RouteSAE folder, a Hugging Face cache laid out as a real download
leaves it, and an `HfApi` whose network boundary (`create_commit`, `repo_info`, `file_exists`) is recorded."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from helpers import make_training_sae
from huggingface_hub import CommitInfo, HfApi
from sae_lens.saes.sae import TrainStepInput
from safetensors.torch import save_file

from sae_lens_routing import RouteTrainingSAE

LFS_SUFFIXES = (".safetensors", ".pt", ".png")
_REAL_REPO_INFO = HfApi.repo_info  # what `offline_cache` restores after `record_hub` faked it


def train_and_save(
    folder: Path, *, sparsity: bool = True, runner_cfg: bool = True, steps: int = 5
) -> tuple[RouteTrainingSAE, torch.Tensor]:
    """A few optimizer steps on random [batch, L, d_in] batches, then what the SAELens runner writes.

    Returns the trained SAE and its log-sparsity (all in the folder too)."""
    sae = make_training_sae()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    fired = torch.zeros(sae.cfg.d_sae)
    for step in range(steps):
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=torch.randn(64, 4, 16),
                coefficients={},
                dead_neuron_mask=None,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        fired += (out.feature_acts > 0).float().mean(0).detach()
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    log_sparsity = torch.log10(fired / steps + 1e-10)
    sae.cfg.metadata.model_name = "tiny-random"
    sae.cfg.metadata.l0 = 4.0
    sae.cfg.metadata.num_dead_features = int((fired == 0).sum())
    sae.save_inference_model(folder)
    if sparsity:
        save_file({"sparsity": log_sparsity}, folder / "sparsity.safetensors")
    if runner_cfg:
        (folder / "runner_cfg.json").write_text(json.dumps({"training_tokens": 12345, "context_size": 8}))
    return sae, log_sparsity


def _etag(path_in_repo: str, data: bytes) -> str:
    """What the Hub reports as etag: sha256 for LFS files, the git blob sha1 for regular ones."""
    if path_in_repo.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def populate_hf_cache(
    cache_dir: Path,
    repo_id: str,
    files: dict[str, bytes],
    *,
    missing: tuple[str, ...] = (),
    commit: str = "0123456789abcdef0123456789abcdef01234567",
    ref: str = "main",
) -> Path:
    """models--org--name/{blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/<ref>}, plus
    `.no_exist/<commit>/<path>` for files a download found absent (what huggingface_hub records on a 404)."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    for path_in_repo, data in files.items():
        blob = repo / "blobs" / _etag(path_in_repo, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = repo / "snapshots" / commit / path_in_repo
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    for path_in_repo in missing:
        marker = repo / ".no_exist" / commit / path_in_repo
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return repo


def folder_files(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@dataclass
class RecordedHub:
    """The commits that would have reached the Hub: one list of (path_in_repo -> bytes) per commit."""

    commits: list[dict[str, bytes]] = field(default_factory=list)
    readme_exists: bool = False

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for c in self.commits:
            out.update(c)
        return out


def record_hub(monkeypatch: Any) -> RecordedHub:
    """Patch `HfApi` at the network boundary (test only): commits are recorded, nothing is sent. The real
    upload code (SAELens's uploader, `upload_folder`'s file selection, `CommitOperationAdd`) runs as is."""
    import huggingface_hub.constants
    import huggingface_hub.hf_api

    hub = RecordedHub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # anything unpatched fails loudly

    def create_commit(self: HfApi, repo_id: str, operations: Any, **kwargs: Any) -> CommitInfo:
        files = {}
        for op in operations:
            with op.as_file() as f:
                files[op.path_in_repo] = f.read()
        hub.commits.append(files)
        oid = hashlib.sha1(repr(sorted(files)).encode()).hexdigest()
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
            commit_message=kwargs.get("commit_message", ""),
            commit_description="",
            oid=oid,
            pr_url=None,
        )

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    # huggingface_hub 2.x streams `upload_folder` through its Xet pipeline (its own preupload/upload calls)
    # when hf_xet is installed; without it every file goes through `create_commit`, as in 0.x.
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False, raising=False)
    monkeypatch.setattr(HfApi, "repo_info", lambda self, repo_id, **kw: {"id": repo_id})
    monkeypatch.setattr(HfApi, "file_exists", lambda self, repo_id, filename, **kw: hub.readme_exists)
    return hub


def offline_cache(monkeypatch: Any, cache_dir: Path) -> None:
    """Point huggingface_hub (read at call time) at cache_dir, offline; the real `repo_info` (which then fails
    as offline, so `snapshot_download` reads the cache) replaces `record_hub`'s fake one."""
    import huggingface_hub.constants

    monkeypatch.setattr(HfApi, "repo_info", _REAL_REPO_INFO)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
