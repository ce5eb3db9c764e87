"""All-or-nothing writes: a crash mid-write leaves the old file/folder or none, never half of one.

Only what the package wrote is ever replaced: every folder `atomic_directory` finishes holds a manifest
(`MANIFEST`) listing its files, and an existing folder is replaced only when its manifest is there and it holds
nothing else (`check_replaceable`); otherwise the refusal names the files that would be lost.

Temporary names carry the writer's process id (`.NAME.tmp-PID-RANDOM`), so a later run can tell the leftovers
of a killed writer (removed by `remove_stale_temporaries`) from the work of one still running.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "sae_lens_routing_manifest.json"
"""Written last into every folder `atomic_directory` finishes: {"written_by": ..., "files": [top-level names]}."""
_WRITER = "sae_lens_routing"
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# How torch's zip writer (RuntimeError) and safetensors (SafetensorError) report a failed write: no errno kept.
_FULL_MESSAGES = ("unexpected pos", "file write failed", "No space left", "File too large", "StorageFull")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then `os.replace` onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _plain_file_mode())  # mkstemp's 0600 would hide a shared SAE from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise_if_disk_full(err, path)
        raise
    return path


def _plain_file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON every parser reads: a metric undefined on the data (NaN/Inf, e.g. a ratio over a zero baseline)
    is written as null, since Python's default bare `NaN` is not JSON."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """`strict_json(obj)` written atomically: every JSON file the package writes goes through here."""
    return atomic_write_text(path, strict_json(obj, **kwargs))


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def is_disk_full(err: BaseException) -> bool:
    """A write that failed because the disk (or quota, or the process's file size limit) ran out."""
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    return isinstance(err, Exception) and any(m in str(err) for m in _FULL_MESSAGES)


def raise_if_disk_full(err: BaseException, path: Path) -> None:
    """Re-raise a disk-full failure as `OSError(ENOSPC)` naming `path`; anything else is left to the caller."""
    if is_disk_full(err):
        raise OSError(
            errno.ENOSPC,
            f"no space left on {path.parent} (or the file size limit was reached): {path} could not be written; "
            f"its partial files were removed. Free space there and run again ({type(err).__name__}: {err})",
        ) from err


@contextmanager
def atomic_directory(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it becomes `path`.

    With `overwrite` an existing `path` is replaced (removed after the swap) if `check_replaceable` allows it;
    without it an existing `path` is an error. The finished folder gets the manifest that marks it as ours. If the finished folder cannot be moved into place it is renamed to a visible sibling and the
    error says where it is: finished work is never left under a hidden temp name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(err, path)
        raise
    files = sorted(p.name for p in tmp.iterdir())
    atomic_write_text(tmp / MANIFEST, json.dumps({"written_by": _WRITER, "files": files}, indent=1))
    try:
        _move_into_place(tmp, path, overwrite)
    except OSError as err:
        kept = _unhide(tmp, path)
        if isinstance(err, FileExistsError) or err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(
                errno.EEXIST,
                f"{path} already exists and was not replaced; the finished content is in {kept}"
                + ("" if err.errno else f" ({err})"),
            ) from err
        raise OSError(
            err.errno, f"{path} could not be written ({err}); the finished content is in {kept}"
        ) from err


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if not path.exists():
        os.rename(tmp, path)  # fails on a non-empty folder created meanwhile: never a silent replace
        return
    if not overwrite:
        raise FileExistsError(errno.EEXIST, f"{path} already exists")
    check_replaceable(path)
    old = path.parent / f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        if not path.exists():
            os.replace(old, path)  # put the previous content back rather than leave nothing
        raise
    shutil.rmtree(old, ignore_errors=True)


def foreign_files(path: str | Path) -> list[str]:
    """The entries of folder `path` this package did not write (by its manifest); [] for a folder that is
    wholly ours or empty, or a path that does not exist; [its name] for a file."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    if path.is_symlink() or not path.is_dir():
        return [path.name]
    entries = sorted(p.name for p in path.iterdir())
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        ours = set(manifest["files"]) if manifest.get("written_by") == _WRITER else set()
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        ours = set()
    if not ours:
        return entries
    return [e for e in entries if e not in ours and e != MANIFEST]


def check_replaceable(path: str | Path, field: str = "the output", overwrite: bool = True) -> None:
    """Refuse, naming the files it would lose, to replace `path` unless it is a folder this package wrote
    that holds nothing else; without `overwrite`, any non-empty `path` is refused. Call it before the work."""
    path = Path(path)
    foreign = foreign_files(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{field}={str(path)!r} already exists and holds what sae-lens-routing did not write ({shown}); "
            f"it only replaces folders it wrote itself (they hold {MANIFEST}), so choose another {field} or "
            "move those files away",
        )
    if not overwrite and path.exists() and any(path.iterdir()):
        raise FileExistsError(
            f"{field}={str(path)!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            f"or choose another {field}",
        )


def _unhide(tmp: Path, path: Path) -> Path:
    """Rename a finished temp folder to a visible `NAME.unsaved-RANDOM` beside `path` (best effort)."""
    visible = path.parent / f"{path.name}.unsaved-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(tmp, visible)
    except OSError:
        return tmp
    return visible


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the `.NAME.tmp-PID-*` / `.NAME.old-PID-*` leftovers (of `name` only, if given) in `folder`
    whose writer is no longer running.

    Called at the start of a run: a killed save leaves a hidden partial folder that would otherwise keep its
    disk space forever. Leftovers of a live process (another run writing there now) are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if name is not None and not entry.name.startswith(f".{name}."):
            continue
        pid = _writer_pid(entry.name)
        if pid is None or _is_running(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.warning("removed %s, a partial write left by a run that was killed (process %d)", entry, pid)
        removed.append(entry)
    return removed


def _writer_pid(name: str) -> int | None:
    if not name.startswith("."):
        return None
    for marker in (".tmp-", ".old-"):
        _, found, rest = name.rpartition(marker)
        if found:
            pid = rest.split("-", 1)[0]
            return int(pid) if pid.isdigit() and "-" in rest else None
    return None


def _is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
