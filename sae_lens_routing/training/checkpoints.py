"""Run safety around the output folder and checkpoints: one run per output, no silent overwrite, and a resume
that is checked (files readable, same model/layers/shape as this run) before any training.

SAELens resumes by loading whatever the folder holds: a checkpoint of other layers trains them silently, and a
truncated file surfaces as a raw torch/safetensors/JSON error naming no file. These checks run first instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.constants import (
    ACTIVATION_SCALER_CFG_FILENAME,
    ACTIVATION_WHITENING_FILENAME,
    ACTIVATIONS_STORE_STATE_FILENAME,
    RUNNER_CFG_FILENAME,
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    TRAINER_STATE_FILENAME,
)
from safetensors import safe_open

from sae_lens_routing.atomic import check_replaceable, remove_stale_temporaries
from sae_lens_routing.training.distributed import DistInfo

SAE_FIELDS_THAT_MUST_MATCH = ("hook_names", "d_in", "d_sae", "k", "routing", "router_input")
"""A resumed run continues these weights: any difference would train another SAE than the checkpoint's."""


class DamagedCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or unreadable."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; the message says where progress was saved, or that nothing was."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) handled like Ctrl-C, so `finally` blocks and atomic writes clean up; the
    previous handlers come back afterwards. Signal handlers can only be set from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def save_interrupted(trainers: list[Any]) -> RunInterrupted:
    """A full checkpoint (weights, trainer and store state; its folder written atomically) of each trainer
    that has a checkpoint_path, as the error to raise: it names them and how to resume, or says nothing was saved."""
    saved = []
    for trainer in trainers:
        if trainer.cfg.checkpoint_path is not None:
            trainer.save_checkpoint(str(trainer.n_training_samples))
            saved.append(str(Path(trainer.cfg.checkpoint_path) / str(trainer.n_training_samples)))
    if not saved:
        return RunInterrupted("training was interrupted; nothing was saved (checkpoint_path is null)")
    return RunInterrupted(
        f"training was interrupted; progress saved to {', '.join(saved)}: resume with "
        f"resume_from_checkpoint={saved[0]} (CLI: --set resume_from_checkpoint={saved[0]})"
    )


def refuse_existing_output(output_path: str | None, overwrite: bool) -> None:
    """An existing output folder is only replaced when asked to, and only if this package wrote all of it."""
    if output_path is not None:
        check_replaceable(output_path, "output_path", overwrite)


@contextmanager
def claim_output(output_path: str | None, overwrite: bool, info: DistInfo) -> Iterator[None]:
    """For the whole run: rank 0 holds the output lock and re-checks the output under it. Under torchrun
    every rank raises rank 0's refusal (else the others would wait for it in their first collective)."""
    with ExitStack() as stack:
        refusal: Exception | None = None
        if info.is_main and output_path is not None:
            try:
                stack.enter_context(output_lock(output_path))
                refuse_existing_output(output_path, overwrite)
            except (RuntimeError, FileExistsError) as err:
                refusal = err
        if info.enabled:
            message = [None if refusal is None else str(refusal)]
            dist.broadcast_object_list(message, src=0)
            if message[0] is not None and refusal is None:
                raise RuntimeError(message[0])
        if refusal is not None:
            raise refusal
        yield


def remove_stale_partial_writes(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """Leftovers of killed saves: beside the output folder, in this run's checkpoint folder and the resumed
    checkpoint's folder. Called under the output lock, so no other run of ours is writing the output."""
    if cfg.output_path is not None:
        out = Path(cfg.output_path)
        remove_stale_temporaries(out.parent, name=out.name)
    for folder in (
        cfg.checkpoint_path,
        cfg.resume_from_checkpoint and Path(cfg.resume_from_checkpoint).parent,
    ):
        if folder:
            remove_stale_temporaries(folder)


@contextmanager
def output_lock(output_path: str | Path) -> Iterator[Path]:
    """Hold an exclusive OS lock on `<output_path>.lock` for a whole run: a second run on the same output is
    refused before it trains. The kernel drops the lock when the process dies, so a killed run never blocks."""
    lock_path = Path(f"{output_path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_pid(lock_path)
            raise RuntimeError(
                f"another training run{holder} is writing output_path={str(output_path)!r} (it holds "
                f"{lock_path}); wait for it to finish or choose another output_path"
            ) from None
        if _is_same_file(fd, lock_path):
            break
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield lock_path
    finally:
        # Unlink before unlocking: a run that opened this file meanwhile sees it is gone and retries.
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _is_same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_pid(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


def check_resume_checkpoint(checkpoint: str | Path, cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """Refuse, before any training, a checkpoint that is damaged or was trained for another SAE than `cfg`."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={str(checkpoint)!r} is not a checkpoint folder")
    if (checkpoint / SAE_CFG_FILENAME).is_file() and not any(
        (checkpoint / f).exists() for f in (TRAINER_STATE_FILENAME, ACTIVATIONS_STORE_STATE_FILENAME)
    ):
        raise ValueError(
            f"resume_from_checkpoint={str(checkpoint)!r} is a saved SAE (an output_path), not a training "
            "checkpoint: resume from a folder under checkpoint_path (<checkpoint_path>/<run id>/<tokens>), or "
            "start a new run from these weights with from_pretrained_path"
        )
    readers: list[tuple[str, Callable[[Path], Any]]] = [
        (SAE_CFG_FILENAME, _read_json),
        (RUNNER_CFG_FILENAME, _read_json),
        (ACTIVATION_SCALER_CFG_FILENAME, _read_json),
        (SAE_WEIGHTS_FILENAME, _open_safetensors),
        (ACTIVATIONS_STORE_STATE_FILENAME, _open_safetensors),
        (TRAINER_STATE_FILENAME, _open_trainer_state),
    ]
    if (checkpoint / ACTIVATION_WHITENING_FILENAME).exists():
        readers.append((ACTIVATION_WHITENING_FILENAME, _open_safetensors))
    contents = {}
    for name, read in readers:
        try:
            contents[name] = read(checkpoint / name)
        except Exception as err:  # noqa: BLE001  (any failure to read means the same thing: damaged)
            raise DamagedCheckpointError(_damaged_message(checkpoint, name, err)) from err
    _check_same_run(checkpoint, contents[SAE_CFG_FILENAME], contents[RUNNER_CFG_FILENAME], cfg)


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _open_safetensors(path: Path) -> None:
    with safe_open(str(path), framework="pt") as f:  # checks the header against the file's length
        list(f.keys())


def _open_trainer_state(path: Path) -> None:
    # mmap: the zip index and pickle are checked (a truncated file loses its index) without reading the tensors.
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or "n_training_samples" not in state:
        raise ValueError("not a SAELens trainer state (no n_training_samples)")


def _damaged_message(checkpoint: Path, name: str, err: Exception) -> str:
    path = checkpoint / name
    problem = (
        "is missing"
        if isinstance(err, FileNotFoundError)
        else f"cannot be read ({type(err).__name__}: {err})"
    )
    previous = previous_checkpoint(checkpoint)
    way_on = (
        f"resume from the previous checkpoint instead: resume_from_checkpoint={str(previous)!r}"
        if previous is not None
        else f"there is no earlier checkpoint in {checkpoint.parent}; start the run again without resume_from_checkpoint"
    )
    return f"the checkpoint {checkpoint} is damaged: {path} {problem}; {way_on}"


def previous_checkpoint(checkpoint: Path) -> Path | None:
    """The latest checkpoint written before `checkpoint` in the same run folder (names count training samples)."""
    own = _samples_of(checkpoint.name)
    if own is None or not checkpoint.parent.is_dir():
        return None
    earlier = [
        (n, p)
        for p in checkpoint.parent.iterdir()
        if p.is_dir()
        and (n := _samples_of(p.name)) is not None
        and n < own
        and (p / TRAINER_STATE_FILENAME).exists()
    ]
    return max(earlier)[1] if earlier else None


def _samples_of(name: str) -> int | None:
    digits = name.removeprefix("final_")
    return int(digits) if digits.isdigit() else None


def _check_same_run(
    checkpoint: Path,
    sae_cfg: dict[str, Any],
    runner_cfg: dict[str, Any],
    cfg: LanguageModelSAERunnerConfig[Any],
) -> None:
    pairs: list[tuple[str, Any, Any, str]] = [
        ("model_name", runner_cfg.get("model_name"), cfg.model_name, RUNNER_CFG_FILENAME)
    ]
    pairs += [
        (f"sae.{field}", sae_cfg.get(field), getattr(cfg.sae, field, None), SAE_CFG_FILENAME)
        for field in SAE_FIELDS_THAT_MUST_MATCH
    ]
    for field, saved, wanted, source in pairs:
        if _plain(saved) != _plain(wanted):
            raise ValueError(
                f"cannot resume from {checkpoint}: it was trained with {field}={saved!r} ({source}), but this "
                f"run has {field}={wanted!r}; resume with the checkpoint's settings or start a new run"
            )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
