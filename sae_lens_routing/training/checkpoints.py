"""Run safety: one run per output folder, interrupts that save a checkpoint, a resume checked first."""

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from filelock import FileLock, Timeout
from sae_lens import constants as c
from sae_lens.config import LanguageModelSAERunnerConfig
from safetensors import safe_open

from sae_lens_routing.atomic import RunInterrupted, check_replaceable, remove_stale_temporaries
from sae_lens_routing.training.validation import refuse

SAE_FIELDS_THAT_MUST_MATCH = ("hook_names", "d_in", "d_sae", "k", "routing", "router_input")


class DamagedCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or unreadable."""


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) handled like Ctrl-C, so `finally` blocks and atomic writes clean up."""
    main = threading.current_thread() is threading.main_thread()  # handlers can only be set from there
    signals = (signal.SIGINT, signal.SIGTERM) if main else ()
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def save_interrupted(trainers: list[Any]) -> RunInterrupted:
    """Checkpoint each trainer that has a checkpoint_path; the error names them."""
    saved = []
    for trainer in trainers:
        if trainer.cfg.checkpoint_path is not None:
            trainer.save_checkpoint(str(trainer.n_training_samples))
            saved.append(str(Path(trainer.cfg.checkpoint_path) / str(trainer.n_training_samples)))
    if not saved:
        return RunInterrupted("training was interrupted; nothing was saved (checkpoint_path is null)")
    return RunInterrupted(f"training was interrupted; progress saved to {', '.join(saved)}: resume with "
                          f"resume_from_checkpoint={saved[0]} (CLI: --set resume_from_checkpoint={saved[0]})")


@contextmanager
def claim_output(cfg: LanguageModelSAERunnerConfig[Any], overwrite: bool, is_main: bool = True,
                 training: bool = False) -> Iterator[None]:
    """Hold `<output_path>.lock`; before training refuse an output not ours to replace, when training remove
    killed saves' leftovers. Every rank raises rank 0's refusal (no rank waits alone)."""
    with ExitStack() as stack:
        refusal: Exception | None = None
        if is_main and cfg.output_path is not None:
            lock_path = Path(f"{cfg.output_path}.lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                stack.enter_context(FileLock(lock_path, timeout=0))
                stack.callback(lock_path.unlink, missing_ok=True)  # before the release
                lock_path.write_text(f"{os.getpid()}\n")
                if not training:
                    check_replaceable(cfg.output_path, "output_path", overwrite)
            except Timeout:
                holder = lock_path.read_text().strip() if lock_path.exists() else ""
                who = f" (process {holder})" if holder.isdigit() else ""
                refusal = RuntimeError(f"another training run{who} is writing output_path="
                                       f"{str(cfg.output_path)!r} (it holds {lock_path}); wait for it to "
                                       "finish or choose another output_path")
            except FileExistsError as err:
                refusal = err
        if dist.is_available() and dist.is_initialized():
            shared = [refusal]
            dist.broadcast_object_list(shared, src=0)
            refusal = shared[0]
        if refusal is not None:
            raise refusal
        if training and is_main:
            if cfg.output_path is not None:
                remove_stale_temporaries(Path(cfg.output_path).parent, name=Path(cfg.output_path).name)
            resumed = cfg.resume_from_checkpoint and Path(cfg.resume_from_checkpoint).parent
            for folder in filter(None, (cfg.checkpoint_path, resumed)):
                remove_stale_temporaries(folder)
        yield


def check_resume_checkpoint(checkpoint: str | Path, cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """Refuse, before any training, a checkpoint that is damaged or was trained for another SAE than `cfg`."""
    checkpoint = Path(checkpoint)
    refuse([
        (checkpoint / c.SAE_CFG_FILENAME).is_file() and not any(
            (checkpoint / f).exists() for f in (c.TRAINER_STATE_FILENAME, c.ACTIVATIONS_STORE_STATE_FILENAME)
        ) and f"resume_from_checkpoint={str(checkpoint)!r} is a saved SAE (an output_path), not a training "
        "checkpoint: resume from a folder under checkpoint_path (<checkpoint_path>/<run id>/<tokens>), or "
        "start a new run from these weights with from_pretrained_path"
    ])
    names = [c.SAE_CFG_FILENAME, c.RUNNER_CFG_FILENAME, c.ACTIVATION_SCALER_CFG_FILENAME,
             c.SAE_WEIGHTS_FILENAME, c.ACTIVATIONS_STORE_STATE_FILENAME, c.TRAINER_STATE_FILENAME]
    names += [c.ACTIVATION_WHITENING_FILENAME] * (checkpoint / c.ACTIVATION_WHITENING_FILENAME).exists()
    contents = {}
    for name in names:
        try:
            contents[name] = _read(checkpoint / name)
        except Exception as err:  # noqa: BLE001  (any failure to read means the same thing: damaged)
            missing = isinstance(err, FileNotFoundError)
            problem = "is missing" if missing else f"cannot be read ({type(err).__name__}: {err})"
            previous = _previous_checkpoint(checkpoint)
            way_on = (f"resume from the previous checkpoint instead: resume_from_checkpoint={str(previous)!r}"
                      if previous is not None else f"there is no earlier checkpoint in {checkpoint.parent}; "
                      "start the run again without resume_from_checkpoint")
            raise DamagedCheckpointError(
                f"the checkpoint {checkpoint} is damaged: {checkpoint / name} {problem}; {way_on}"
            ) from err
    sae_cfg, runner_cfg = contents[c.SAE_CFG_FILENAME], contents[c.RUNNER_CFG_FILENAME]
    pairs = [("model_name", runner_cfg.get("model_name"), cfg.model_name, c.RUNNER_CFG_FILENAME)]
    pairs += [(f"sae.{f}", sae_cfg.get(f), getattr(cfg.sae, f, None), c.SAE_CFG_FILENAME)
              for f in SAE_FIELDS_THAT_MUST_MATCH]
    refuse(
        f"cannot resume from {checkpoint}: it was trained with {field}={saved!r} ({source}), but this run "
        f"has {field}={wanted!r}; resume with the checkpoint's settings or start a new run"
        for field, saved, wanted, source in pairs
        if saved != json.loads(json.dumps(wanted))  # JSON has no tuples
    )


def _read(path: Path) -> Any:
    """A JSON object; or None after checking a safetensors header / torch zip index (no tensors read)."""
    if path.suffix == ".json":
        return dict(json.loads(path.read_text()))  # anything but an object fails here
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:  # checks the header against the file's length
            list(f.keys())
    else:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)["n_training_samples"]
    return None


def _previous_checkpoint(checkpoint: Path) -> Path | None:
    """The latest checkpoint written before `checkpoint` in its run folder (names count training samples)."""
    def samples(name: str) -> int | None:
        digits = name.removeprefix("final_")
        return int(digits) if digits.isdigit() else None

    own = samples(checkpoint.name)
    siblings = checkpoint.parent.iterdir() if own is not None and checkpoint.parent.is_dir() else ()
    earlier = [
        (n, p) for p in siblings
        if (n := samples(p.name)) is not None and n < own and (p / c.TRAINER_STATE_FILENAME).exists()
    ]
    return max(earlier)[1] if earlier else None
