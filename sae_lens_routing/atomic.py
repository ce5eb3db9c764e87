"""All-or-nothing writes; a manifest marks the folders this package wrote, the only ones it replaces."""

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "sae_lens_routing_manifest.json"
_WRITER = "sae_lens_routing"
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# torch's zip writer (RuntimeError) and safetensors (SafetensorError) report a failed write without an errno.
_FULL_MESSAGES = ("unexpected pos", "file write failed", "No space left", "File too large", "StorageFull")


@contextmanager
def _cleaned_on_failure(path: Path, cleanup: Callable[[], Any]) -> Iterator[None]:
    """Run `cleanup` on any failure; a full disk, quota or file-size limit becomes one `OSError(ENOSPC)`."""
    try:
        yield
    except BaseException as err:
        cleanup()
        full = getattr(err, "errno", None) in _FULL_ERRNOS
        if not (full or isinstance(err, Exception) and any(m in str(err) for m in _FULL_MESSAGES)):
            raise
        raise OSError(errno.ENOSPC, f"no space left on {path.parent} (or the file size limit was reached): "
                      f"{path} could not be written; its partial files were removed. Free space there and "
                      f"run again ({type(err).__name__}: {err})") from err


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with _cleaned_on_failure(path, lambda: Path(tmp).unlink(missing_ok=True)):
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared SAE from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; the message says truthfully what was kept."""


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON every parser reads: NaN/Inf (a metric undefined on the data) becomes null."""

    def finite(o: Any) -> Any:
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        return [finite(v) for v in o] if isinstance(o, list | tuple) else o

    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    return atomic_write_text(path, strict_json(obj, **kwargs))


@contextmanager
def atomic_directory(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """A temp folder that becomes `path` on success; else it stays as `NAME.unsaved-*`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    with _cleaned_on_failure(path, lambda: shutil.rmtree(tmp, ignore_errors=True)):
        yield tmp
    atomic_write_text(tmp / MANIFEST, json.dumps({"written_by": _WRITER, "files": sorted(os.listdir(tmp))}))
    try:
        if overwrite and path.exists():
            check_replaceable(path)
            old = path.parent / f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            try:
                os.rename(tmp, path)
            finally:
                if not path.exists():  # put the previous content back rather than leave nothing
                    os.replace(old, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)  # fails on an existing non-empty folder: never a silent replace
    except OSError as err:
        kept = path.parent / f"{path.name}.unsaved-{uuid.uuid4().hex[:8]}"
        os.rename(tmp, kept)
        exists = isinstance(err, FileExistsError) or err.errno in (errno.EEXIST, errno.ENOTEMPTY)
        what = "already exists and was not replaced" if exists else f"could not be written ({err})"
        message = f"{path} {what}; the finished content is in {kept}"
        message += f" ({err})" if exists and not err.errno else ""
        raise (FileExistsError(errno.EEXIST, message) if exists else OSError(err.errno, message)) from err


def check_replaceable(path: str | Path, field: str = "the output", overwrite: bool = True) -> None:
    """Refuse to replace `path` unless this package wrote all of it (without `overwrite`: any `path`)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        foreign = [path.name]
    elif path.is_dir():
        entries = sorted(os.listdir(path))
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            ours = set(manifest["files"]) if manifest["written_by"] == _WRITER else set()
        except (OSError, ValueError, TypeError, KeyError):
            ours = set()
        foreign = [e for e in entries if e not in ours and e != MANIFEST] if ours else entries
    else:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if foreign or not overwrite and entries:
        raise FileExistsError(
            f"{field}={str(path)!r} already exists and holds what sae-lens-routing did not write ({shown});"
            f" it only replaces folders it wrote itself (they hold {MANIFEST}), so choose another {field} or"
            " move those files away" if foreign else f"{field}={str(path)!r} already exists; pass "
            f"overwrite=True (CLI: --overwrite) to replace it, or choose another {field}"
        )


def claim_folder(path: str | Path, names: tuple[str, ...], field: str = "--out", create: bool = True) -> Path:
    """A folder written in place: new, empty or this package's; marked ours (with `names`, what the command
    will write) before any work, so a run killed half-way may be run again."""
    check_replaceable(path, field)
    if create:
        Path(path).mkdir(parents=True, exist_ok=True)
        files = sorted((set(names) | set(os.listdir(path))) - {MANIFEST})
        atomic_write_text(Path(path) / MANIFEST, json.dumps({"written_by": _WRITER, "files": files}))
    return Path(path)


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the `.NAME.tmp|old-PID-*` leftovers in `folder` whose writer is gone (killed saves)."""
    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        found = re.fullmatch(r"\.(.+)\.(?:tmp|old)-(\d+)-.*", entry.name, re.DOTALL)
        if not found or name not in (None, found[1]) or _running(int(found[2])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.warning("removed %s, a partial write left by a run that was killed (pid %s)", entry, found[2])
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
