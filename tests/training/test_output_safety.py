"""Output safety of a training run: an existing output is never replaced without `overwrite`, a second run on
the same output is refused before it trains, a finished SAE is never left hidden, a full disk while
checkpointing says so and leaves no partial checkpoint, and leftovers of killed saves are removed at the next
start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import route_runner_cfg, tiny_model, token_dataset, write_config
from sae_lens import SAE

from sae_lens_routing import RouteSAE
from sae_lens_routing.cli.main import main
from sae_lens_routing.training.runner import RouteSAETrainingRunner

TESTS = Path(__file__).parents[1]
QUICK = dict(training_tokens=128 * 4, n_eval_batches=1)


def runner(tmp_path, overwrite=False, **overrides):
    cfg = route_runner_cfg(tmp_path, **{**QUICK, **overrides})
    return RouteSAETrainingRunner(
        cfg, override_dataset=token_dataset(64), override_model=tiny_model(), overwrite=overwrite
    )


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh Python process that imports this checkout and the test helpers."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    runner(tmp_path).run()
    weights = tmp_path / "out" / "sae_weights.safetensors"
    first = weights.read_bytes()
    with pytest.raises(
        FileExistsError,
        match=r"output_path='.*/out' already exists; pass overwrite=True \(CLI: --overwrite\)",
    ):
        runner(tmp_path, seed=1)
    assert weights.read_bytes() == first

    runner(tmp_path, overwrite=True, seed=1).run()
    assert weights.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file or hidden temp folder left


def test_output_that_appears_during_training_is_not_replaced(tmp_path):
    """The check runs again at save time; the trained SAE is then kept in a visible folder the error names."""
    run = runner(tmp_path)
    build = run.build_trainer

    def build_with_intruder(data_provider):
        trainer = build(data_provider)
        fit = trainer.fit

        def fit_then_intrude():
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "cfg.json").write_text("another run's SAE")
            return fit()

        trainer.fit = fit_then_intrude
        return trainer

    run.build_trainer = build_with_intruder
    with pytest.raises(
        FileExistsError, match=r"out already exists and was not replaced; the finished content is in "
    ) as err:
        run.run()
    assert (tmp_path / "out" / "cfg.json").read_text() == "another run's SAE"
    (kept,) = tmp_path.glob("out.unsaved-*")
    assert str(kept) in str(err.value)
    assert isinstance(SAE.load_from_disk(kept), RouteSAE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", kept.name]  # nothing hidden, lock released


SECOND_RUN = """
    import sys
    from pathlib import Path
    from helpers import route_runner_cfg, tiny_model, token_dataset, write_config
    from sae_lens_routing.training.runner import RouteSAETrainingRunner

    cfg = route_runner_cfg(Path(sys.argv[1]), training_tokens=512, n_eval_batches=1)
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    build = runner.build_trainer
    runner.build_trainer = lambda data_provider: print("TRAINING STARTED", flush=True) or build(data_provider)
    runner.run()
"""


@pytest.mark.slow  # a second Python process (~5-10 s of imports)
def test_a_second_run_on_the_same_output_is_refused_before_it_trains(tmp_path):
    run = runner(tmp_path)
    build = run.build_trainer
    second: list[subprocess.CompletedProcess[str]] = []

    def build_and_start_a_second_run(data_provider):
        trainer = build(data_provider)
        fit = trainer.fit

        def fit_while_another_run_starts():
            second.append(run_script(SECOND_RUN, str(tmp_path)))
            return fit()

        trainer.fit = fit_while_another_run_starts
        return trainer

    run.build_trainer = build_and_start_a_second_run
    run.run()
    (proc,) = second
    assert proc.returncode != 0
    assert (
        f"another training run (process {os.getpid()}) is writing output_path='{tmp_path / 'out'}'"
        in proc.stderr
    )
    assert "TRAINING STARTED" not in proc.stdout
    assert isinstance(SAE.load_from_disk(tmp_path / "out"), RouteSAE)  # the first run's SAE, saved normally
    assert not (tmp_path / "out.lock").exists()


DISK_FULL = """
    import json, resource, signal, sys
    from pathlib import Path
    from helpers import route_runner_cfg, tiny_model, token_dataset, write_config
    from sae_lens_routing.training.runner import RouteSAETrainingRunner

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: EFBIG instead of killing us
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    results = {}
    for limit in map(int, sys.argv[2:]):
        folder = Path(sys.argv[1]) / str(limit)
        cfg = route_runner_cfg(
            folder, training_tokens=512, n_eval_batches=1, n_checkpoints=1,
            checkpoint_path=str(folder / "ckpt"),
        )
        runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            runner.run()
            results[limit] = ["no error", cfg.checkpoint_path]
        except Exception as err:
            results[limit] = [f"{type(err).__name__}: {err}", cfg.checkpoint_path]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(json.dumps(results))
"""


@pytest.mark.slow  # a second Python process (~5-10 s of imports)
def test_disk_full_while_checkpointing_names_the_checkpoint_and_removes_partial_files(tmp_path):
    """A real size-limited write (RLIMIT_FSIZE): 2000 bytes stops the safetensors weights, 8000 bytes the
    torch trainer state (torch's own error is `[enforce fail at inline_container.cc] unexpected pos`)."""
    proc = run_script(DISK_FULL, str(tmp_path), "2000", "8000")
    if proc.returncode != 0 and "setrlimit" in proc.stderr:
        pytest.skip(f"cannot limit the file size here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for limit in ("2000", "8000"):
        message, run_folder = results[limit]
        assert message.startswith(f"OSError: [Errno 28] no space left on {run_folder} "), message
        assert f"{run_folder}/384 could not be written; its partial files were removed" in message
        leftovers = [p for p in (tmp_path / limit).rglob("*") if ".tmp-" in p.name or p.name == "384"]
        assert leftovers == []
    assert "SafetensorError" in results["2000"][0] and "unexpected pos" in results["8000"][0]


def test_leftovers_of_killed_saves_are_removed_at_the_next_start(tmp_path, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    run = runner(tmp_path, n_checkpoints=1, checkpoint_path=str(tmp_path / "ckpt"))
    ckpt_folder = Path(run.cfg.checkpoint_path)
    stale = [tmp_path / f".out.tmp-{dead_pid}-0123abcd", ckpt_folder / f".256.tmp-{dead_pid}-0123abcd"]
    live = ckpt_folder / f".128.tmp-{os.getpid()}-0123abcd"  # a writer still running: kept
    for folder in (*stale, live):
        folder.mkdir(parents=True)
        (folder / "trainer_state.pt").write_bytes(b"partial")
    with caplog.at_level("WARNING"):
        run.run()
    assert not any(p.exists() for p in stale)
    assert live.exists()
    assert sum("partial write left by a run that was killed" in r.getMessage() for r in caplog.records) == 2


def test_cli_overwrite_flag(tmp_path):
    config = str(write_config(tmp_path, training_tokens=512))
    assert main(["train", "--config", config]) == 0
    weights = tmp_path / "out" / "sae_weights.safetensors"
    first = weights.read_bytes()
    with pytest.raises(FileExistsError, match=r"pass overwrite=True \(CLI: --overwrite\)"):
        main(["train", "--config", config, "--set", "seed=1"])
    assert weights.read_bytes() == first
    assert main(["train", "--config", config, "--set", "seed=1", "--overwrite"]) == 0
    assert weights.read_bytes() != first
