"""All-or-nothing writes: old content survives a failed write, and new files get the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from sae_lens_routing.atomic import atomic_directory, atomic_write_text


def test_file_gets_umask_mode_and_no_temp_left(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "eval.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600: shared outputs stay readable
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_failed_directory_write_keeps_the_old_folder(tmp_path):
    out = tmp_path / "sae"
    with atomic_directory(out) as tmp:
        (tmp / "cfg.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "cfg.json").write_text("half")
            raise RuntimeError("killed mid-save")
    assert (out / "cfg.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
    with atomic_directory(out) as tmp:
        (tmp / "cfg.json").write_text("new")
    assert (out / "cfg.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
