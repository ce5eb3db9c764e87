"""All-or-nothing writes: old content survives a failed write, and new files get the usual permissions."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from sae_lens_routing.atomic import atomic_directory, atomic_write_text, remove_stale_temporaries


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


def test_directory_without_overwrite_keeps_both_and_says_where_the_new_one_is(tmp_path):
    out = tmp_path / "sae"
    with atomic_directory(out) as tmp:
        (tmp / "cfg.json").write_text("old")
    with pytest.raises(
        FileExistsError, match="sae already exists and was not replaced; the finished content is in "
    ) as err:
        with atomic_directory(out, overwrite=False) as tmp:
            (tmp / "cfg.json").write_text("new")
    assert (out / "cfg.json").read_text() == "old"
    (kept,) = tmp_path.glob("sae.unsaved-*")  # visible, not a hidden temp folder
    assert str(kept) in str(err.value) and (kept / "cfg.json").read_text() == "new"


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
    ],
)
def test_disk_full_names_the_folder_and_removes_partial_files(tmp_path, failure):
    with pytest.raises(
        OSError, match=rf"no space left on {tmp_path} .*: {tmp_path / 'ckpt'} could not be written"
    ):
        with atomic_directory(tmp_path / "ckpt") as tmp:
            (tmp / "part").write_bytes(b"half")
            raise failure
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unrelated"):  # other failures pass through unchanged
        with atomic_directory(tmp_path / "ckpt"):
            raise ValueError("unrelated")


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".sae.tmp-{dead_pid}-0123abcd", tmp_path / f".sae.old-{dead_pid}-0123abcd"]
    kept = [
        tmp_path / f".sae.tmp-{os.getpid()}-0123abcd",  # a live writer
        tmp_path / f".other.tmp-{dead_pid}-0123abcd",  # not the name asked for
        tmp_path / ".sae.tmp-0123abcd",  # no writer pid: not ours to judge
        tmp_path / "sae",
    ]
    for path in stale + kept:
        path.mkdir()
    with caplog.at_level("WARNING"):
        removed = remove_stale_temporaries(tmp_path, name="sae")
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert "partial write left by a run that was killed" in caplog.text


def test_the_package_imports_where_fcntl_does_not_exist():
    """The output lock is filelock's, which falls back where fcntl is missing (Windows)."""
    code = "import sys; sys.modules['fcntl'] = None; import sae_lens_routing.cli.main; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
