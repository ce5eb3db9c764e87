"""The second round of bad input, one test per row: nothing lost, nothing hangs, nothing silently wrong, and
each unclear failure one line naming the field or file, what was found and what to do, as early as it can be
known.

(Rows about one SAE's encode/decode live in tests/saes/test_route_sae.py, the upload dry run in
tests/hub/test_hub.py.)"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from helpers import (
    OFFICIAL_CKPT,
    make_sae,
    refuse_loaders,
    route_runner_cfg,
    tiny_model,
    token_dataset,
    write_config,
)

from sae_lens_routing import atomic
from sae_lens_routing.cli.main import cli, main
from sae_lens_routing.training import checkpoints
from sae_lens_routing.training import store as store_module
from sae_lens_routing.training.checkpoints import check_resume_checkpoint
from sae_lens_routing.training.run_config import RunConfig, train_from_config
from sae_lens_routing.training.runner import RouteSAETrainingRunner
from sae_lens_routing.training.validation import validate_route_config

QUICK = dict(training_tokens=128 * 4, n_eval_batches=1)


def user_folder(path):
    """A folder of the user's: notes and a sub-folder, never written by this package."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "data.csv").write_text("1,2")
    return path


def dead_pid() -> int:
    """The id of a process that has exited (a run killed with kill -9 leaves its pid behind like this)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


# ---- Data lost ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_overwrite_never_deletes_a_user_folder_and_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, overwrite
):
    """`train --overwrite` (and the demo, which passes overwrite=True) on a folder not written by us."""
    out = user_folder(tmp_path / "mine")
    refuse_loaders(monkeypatch)
    run = RunConfig(runner=route_runner_cfg(tmp_path, output_path=str(out)))
    with pytest.raises(
        FileExistsError,
        match=r"output_path=.*mine.* holds what sae-lens-routing did not "
        r"write \(notes.txt, sub\).*choose another output_path",
    ):
        train_from_config(run, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "data.csv").exists()


@pytest.mark.parametrize("sweep", [False, True])
def test_an_existing_output_without_overwrite_is_refused_before_the_model_loads(tmp_path, monkeypatch, sweep):
    refuse_loaders(monkeypatch)
    out = tmp_path / "out" / "a" if sweep else tmp_path / "out"
    with atomic.atomic_directory(out) as tmp:  # an earlier run's output
        (tmp / "cfg.json").write_text("{}")
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    extra = {"sweep": [{"name": "a"}, {"name": "b"}]} if sweep else {}
    sae = {"d_in": 32, "d_sae": 64, "k": 4, "hook_names": hooks}
    config = write_config(tmp_path, model_path=str(tmp_path), sae=sae, **extra)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"output_path=.*out.* already exists; pass overwrite=True"):
        main(["train", "--config", str(config)])


def test_overwrite_replaces_its_own_output_but_not_once_the_user_added_a_file(tmp_path):
    def run(**kw):
        cfg = route_runner_cfg(tmp_path, **QUICK, **kw)
        RouteSAETrainingRunner(
            cfg, override_dataset=token_dataset(64), override_model=tiny_model(), overwrite=True
        ).run()

    run()
    out = tmp_path / "out"
    assert atomic.MANIFEST in os.listdir(out)
    run(seed=1)  # its own output: replaced
    (out / "my_plot.png").write_text("x")
    with pytest.raises(FileExistsError, match=r"holds what sae-lens-routing did not write \(my_plot.png\)"):
        run(seed=2)
    assert (out / "my_plot.png").exists()


def test_demo_never_forces_overwrite_of_a_folder_it_did_not_create(tmp_path, monkeypatch):
    out = user_folder(tmp_path / "mine")
    refuse_loaders(monkeypatch)
    args = ["demo", "--out", str(tmp_path / "demo"), "--set", f"output_path={out}", "--set", "sae.d_in=576"]
    with pytest.raises(FileExistsError, match="notes.txt, sub"):
        main(args)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "paths, message",
    [
        (
            {
                "output_path": "{t}/cache",
                "cached_activations_path": "{t}/cache",
                "use_cached_activations": True,
            },
            r"output_path=.*cache' equals cached_activations_path=.*; give output_path a folder of its own",
        ),
        (
            {"output_path": "{t}/cache/", "cached_activations_path": "{t}/./cache"},
            r"output_path=.*equals cached_activations_path",
        ),
        (
            {"output_path": "{t}/run", "cached_activations_path": "{t}/run/cache"},
            r"cached_activations_path=.* lies inside output_path=.*give output_path",
        ),
        (
            {"output_path": "{t}/out", "checkpoint_path": "{t}/out/checkpoints"},
            r"checkpoint_path=.* lies inside",
        ),
        (
            {"output_path": "{t}/out", "checkpoint_path": "{t}/out"},
            r"checkpoint_path=.* lies inside output_path",
        ),
        (
            {"output_path": "{t}/link", "from_pretrained_path": "{t}/real"},
            r"output_path=.*equals from_pretrained",
        ),
    ],
)
def test_a_path_nested_in_another_path_of_the_run_is_refused_at_config_time(tmp_path, paths, message):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")  # a symlink aliases its target
    overrides = {k: v.format(t=tmp_path) if isinstance(v, str) else v for k, v in paths.items()}
    with pytest.raises(ValueError, match=message):
        validate_route_config(route_runner_cfg(tmp_path, **overrides))


def test_sweep_variants_whose_paths_alias_are_refused(tmp_path):
    from sae_lens_routing.training.sweep import check_shared_stream, sweep_run_configs

    data = yaml_sweep(tmp_path, [{"name": "a"}, {"name": "b", "output_path": f"{tmp_path}/root/./a"}])
    names, runs = sweep_run_configs(data)
    with pytest.raises(ValueError, match=r"variant 'a' output_path=.*root/a' equals variant 'b' output_path"):
        check_shared_stream([r.runner for r in runs], names)


def yaml_sweep(tmp_path, variants):
    return {
        "model_name": "tiny",
        "dataset_path": "x",
        "context_size": 16,
        "training_tokens": 512,
        "train_batch_size_tokens": 128,
        "n_batches_in_buffer": 16,
        "output_path": f"{tmp_path}/root",
        "checkpoint_path": None,
        "logger": {"log_to_wandb": False},  # SAELens's default (true) needs a W&B login
        "sae": {
            "d_in": 16,
            "d_sae": 32,
            "k": 4,
            "hook_names": ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
        },
        "sweep": variants,
    }


# ---- Hangs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"context_size": 1, "exclude_special_tokens": True},  # hung: every token excluded
        {"context_size": 1, "exclude_special_tokens": False},  # silently wrong: every token BOS
        {"context_size": 8, "seqpos_slice": (0, 1)},
    ],
)
def test_only_bos_positions_are_refused_before_the_model_loads(tmp_path, fields):
    cfg = route_runner_cfg(tmp_path, prepend_bos=True, train_batch_size_tokens=16, **fields)
    with pytest.raises(
        ValueError,
        match=r"context_size=.*prepend_bos: true trains only on position 0, which is "
        r"always the BOS token; raise context_size .* or set prepend_bos: false",
    ):
        validate_route_config(cfg)


def test_a_store_whose_batches_stay_empty_fails_within_a_bounded_number(tmp_path, monkeypatch):
    from sae_lens_routing.training.store import MultiLayerActivationsStore

    monkeypatch.setattr(store_module, "MAX_EMPTY_BATCHES", 3)
    cfg = route_runner_cfg(tmp_path, exclude_special_tokens=list(range(50)))  # the whole vocabulary
    store = MultiLayerActivationsStore.from_route_config(
        tiny_model(), cfg, override_dataset=token_dataset(64)
    )
    with pytest.raises(
        ValueError,
        match=r"3 batches of prompts in a row had no token left after "
        r"exclude_special_tokens \(context_size=16.*raise context_size",
    ):
        next(store.get_data_loader())


def test_cache_rerun_removes_a_killed_runs_temporaries(tmp_path):
    from sae_lens_routing.training.activation_cache import cache_routed_activations

    out = tmp_path / "cache"
    stale = tmp_path / f".cache.tmp-{dead_pid()}-deadbeef"
    stale.mkdir()
    (stale / "data-00000.arrow").write_bytes(b"x" * 1000)
    cfg = route_runner_cfg(tmp_path, training_tokens=256, n_eval_batches=1)
    cache_routed_activations(tiny_model(), cfg, out, override_dataset=token_dataset(32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


# ---- Silently wrong ----------------------------------------------------------------------------------------


def test_dashboard_outputs_sharing_a_file_are_refused_before_any_work(tmp_path, monkeypatch):
    refuse_loaders(monkeypatch)
    monkeypatch.setattr("sae_lens_routing.cli.commands.dashboard.compute", lambda args: 1 / 0)
    with pytest.raises(ValueError, match="--out and --neuronpedia name the same file"):
        main(["dashboard", "--sae", "x", "--out", str(tmp_path / "r"), "--neuronpedia", f"{tmp_path}/./r"])


@pytest.mark.parametrize("name", [".", ".."])
def test_sweep_variant_named_dot_or_dotdot_is_refused(tmp_path, name):
    from sae_lens_routing.training.sweep import sweep_run_configs

    with pytest.raises(ValueError, match=r"names must be folder-safe .*not '.' or '..'"):
        sweep_run_configs(yaml_sweep(tmp_path, [{"name": "a"}, {"name": name}]))


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["evaluate", "--sae", "x", "--out", "o", "--threshold", "nan"], "--threshold"),
        (
            ["steer", "--sae", "x", "--prompt", "p", "--feature", "1=1", "--temperature", "nan"],
            "--temperature",
        ),
        (["evaluate", "--sae", "x", "--out", "o", "--device", "bogus"], "--device"),
    ],
)
def test_non_finite_numbers_and_bogus_devices_are_refused_by_the_parser(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


def test_official_checkpoint_with_integer_tensors_is_refused(tmp_path):
    from sae_lens_routing.loading.official import read_official_state_dict

    state = torch.load(OFFICIAL_CKPT, weights_only=True)
    state["router.weight"] = state["router.weight"].to(torch.int32)
    torch.save(state, tmp_path / "int.pt")
    with pytest.raises(ValueError, match=r"router.weight.*int32.* not float tensors"):
        read_official_state_dict(tmp_path / "int.pt")


def test_boolean_features_are_refused():
    from sae_lens_routing.dashboard.report import parse_features

    with pytest.raises(ValueError, match="integers, not booleans"):
        parse_features([True, 3], 8)


# ---- Unclear -> one line -----------------------------------------------------------------------------------


def test_resuming_from_an_sae_output_folder_says_it_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "sae"
    make_sae().save_model(str(folder))
    with pytest.raises(ValueError, match="is a saved SAE .*not a training checkpoint.*from_pretrained_path"):
        check_resume_checkpoint(folder, route_runner_cfg(tmp_path))


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("with_checkpoints", [True, False])
def test_an_interrupt_mid_run_saves_a_resumable_checkpoint_or_says_nothing_was_saved(
    tmp_path, how, with_checkpoints
):
    import signal

    cfg = route_runner_cfg(
        tmp_path, **QUICK, checkpoint_path=str(tmp_path / "ckpt") if with_checkpoints else None
    )
    run = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    build = run.build_trainer

    def build_interrupted(data_provider):
        trainer = build(data_provider)
        step = trainer.step

        def step_then_signal(batch):
            out = step(batch)
            if trainer.n_training_steps == 1:
                signal.raise_signal(getattr(signal, how))
            return out

        trainer.step = step_then_signal
        return trainer

    run.build_trainer = build_interrupted
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(checkpoints.RunInterrupted) as err:
        run.run()
    if not with_checkpoints:
        assert "nothing was saved (checkpoint_path is null)" in str(err.value)
        return
    saved = str(err.value).split("progress saved to ")[1].split(":")[0]
    assert f"resume_from_checkpoint={saved}" in str(err.value)
    check_resume_checkpoint(saved, cfg)  # complete and readable
    assert signal.getsignal(signal.SIGTERM) is handler  # handlers restored


def test_cli_prints_one_interrupted_line(monkeypatch, capsys, tmp_path):
    def interrupted(args):
        raise checkpoints.RunInterrupted("training was interrupted; progress saved to x")

    monkeypatch.setattr("sae_lens_routing.cli.commands.train.run", interrupted)
    config = write_config(tmp_path, model_path=str(tmp_path))
    assert cli(["train", "--config", str(config)]) == 130
    assert capsys.readouterr().err == "interrupted: training was interrupted; progress saved to x\n"


def test_damaged_cache_names_the_cache_and_the_fix(tmp_path):
    from sae_lens_routing.training.activation_cache import (
        CachedMultiLayerActivationsStore,
        cache_routed_activations,
    )

    out = tmp_path / "cache"
    cfg = route_runner_cfg(tmp_path, training_tokens=256, n_eval_batches=1)
    cache_routed_activations(tiny_model(), cfg, out, override_dataset=token_dataset(32))
    run_cfg = route_runner_cfg(
        tmp_path,
        training_tokens=128,
        n_eval_batches=1,
        use_cached_activations=True,
        cached_activations_path=str(out),
        output_path=str(tmp_path / "sae"),
    )
    meta_path = out / "routed_cache.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "n_sequences": meta["n_sequences"] + 5}))
    with pytest.raises(ValueError, match=r"holds \d+ sequences but its routed_cache.json says .*rebuild it"):
        CachedMultiLayerActivationsStore.from_cache_config(run_cfg)
    meta_path.write_text(json.dumps(meta))
    arrow = next(out.glob("data-00000*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with pytest.raises(
        ValueError, match=r"activation cache at .*cache' cannot be read .*cache-activations --overwrite"
    ):
        CachedMultiLayerActivationsStore.from_cache_config(run_cfg)


def test_summary_json_folder_is_refused_before_training(tmp_path, monkeypatch):
    refuse_loaders(monkeypatch)
    with pytest.raises(ValueError, match="--summary-json .* is a folder; give a file path"):
        main(["train", "--config", "missing.yaml", "--summary-json", str(tmp_path)])


def test_a_read_only_output_folder_is_refused_at_config_time(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(tmp_path / "ro") and real_access(p, mode))
    with pytest.raises(ValueError, match=r"output_path=.*ro/out' cannot be written: .*ro is read-only"):
        validate_route_config(route_runner_cfg(tmp_path, output_path=str(tmp_path / "ro" / "out")))


def test_evaluate_names_d_in_against_the_models_d_model(tmp_path, monkeypatch):
    from sae_lens_routing.cli.commands import _common

    folder = tmp_path / "sae"
    make_sae().save_model(str(folder))
    monkeypatch.setattr(
        "sae_lens_routing.offline.local_model.load_local_model", lambda *a, **k: tiny_model(d_model=32)
    )
    args = argparse.Namespace(sae=str(folder), sae_id=None, model_path="m", device="cpu")
    with pytest.raises(ValueError, match="--sae has d_in=16 but the model has d_model=32"):
        _common.load_sae_and_model(args)


@pytest.mark.parametrize("model_name", [None, "no-such-model"])
def test_evaluate_without_a_loadable_model_names_model_path(tmp_path, model_name):
    from sae_lens_routing.cli.commands import _common

    folder = tmp_path / "sae"
    sae = make_sae()
    sae.cfg.metadata.model_name = model_name
    sae.save_model(str(folder))
    args = argparse.Namespace(sae=str(folder), sae_id=None, model_path=None, device="cpu")
    with pytest.raises(ValueError, match="records no model_path and its model_name .* pass --model-path"):
        _common.load_sae_and_model(args)


def test_topk_architecture_on_a_routed_folder_is_named(tmp_path):
    from sae_lens_routing.loading.loaders import read_checked_sae_folder

    folder = tmp_path / "sae"
    make_sae().save_model(str(folder))
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "topk"}))
    with pytest.raises(ValueError, match="cfg has hook_names .* but architecture 'topk'.*'routesae'"):
        read_checked_sae_folder(folder)


def test_upload_of_a_symlink_loop_is_one_line(tmp_path):
    from sae_lens_routing.hub import upload_route_sae

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ValueError, match="loop is not a readable SAE folder"):
        upload_route_sae(tmp_path / "loop", "org/name", dry_run=True)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.ones(2, 8), "tokens must be integer token ids, got dtype torch.float32"),
        (torch.full((2, 8), 50), r"tokens must be ids in \[0, d_vocab=50\)"),
    ],
)
def test_run_route_evals_names_bad_token_ids(tokens, message):
    from sae_lens_routing.analysis.evals import run_route_evals

    with pytest.raises(ValueError, match=message):
        run_route_evals(make_sae(), tiny_model(n_layers=3), tokens)


def test_cache_activations_takes_a_sweep_yaml(tmp_path, monkeypatch):
    refuse_loaders(monkeypatch)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    sae = {"d_in": 32, "d_sae": 64, "k": 4, "hook_names": hooks}
    config = write_config(tmp_path, model_path=str(tmp_path), sweep=[{"name": "a"}], sae=sae)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AssertionError, match="a model or corpus loader was called"):  # got past the config
        main(["cache-activations", "--config", str(config), "--out", str(tmp_path / "c")])


def test_an_atomic_folder_records_what_it_wrote(tmp_path):
    with atomic.atomic_directory(tmp_path / "x") as tmp:
        (tmp / "a").write_text("1")
    assert json.loads((tmp_path / "x" / atomic.MANIFEST).read_text())["files"] == ["a"]


def _start_and_signal(args, ready, sig):
    """Run the CLI, wait until `ready()` (the run is under way), send `sig`; returns (exit code, stderr)."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_lens_routing", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


@pytest.mark.slow  # two CLI processes (~40 s)
def test_ctrl_c_and_sigterm_from_the_cli(tmp_path):
    """Ctrl-C mid-training leaves a complete checkpoint (its folder created by the save) and one line; SIGTERM
    mid-cache removes the partial cache."""
    config = write_config(tmp_path, training_tokens=128 * 2000, checkpoint_path=str(tmp_path / "ckpt"))
    rc, err = _start_and_signal(
        ["train", "--config", str(config)], lambda: (tmp_path / "out.lock").exists(), "SIGINT"
    )
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert (
        "interrupted: training was interrupted; progress saved to " in err
        and "resume_from_checkpoint=" in err
    )
    saved = [p for p in (tmp_path / "ckpt").glob("*/*") if not p.name.startswith(".")]
    assert len(saved) == 1 and {"trainer_state.pt", "sae_weights.safetensors"} <= set(os.listdir(saved[0]))

    cache = tmp_path / "cache"
    rc, err = _start_and_signal(
        ["cache-activations", "--config", str(config), "--out", str(cache), "--tokens", "100000000"],
        lambda: any(p.name.startswith(".cache.tmp-") for p in tmp_path.iterdir()),
        "SIGTERM",
    )
    assert rc == 130 and "Traceback" not in err and "interrupted: nothing was saved" in err, err[-2000:]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache")] and not cache.exists()


# ---- Third round (issue 33): keys never leak, no endless wait, one line, nothing silently accepted ------


SECRET = "sk-proxy-SECRET-0123456789"


def judged_run(tmp_path, server_url, *extra, n_features=2, out=None):
    """`interpret` argv on stored contexts (no model), and the folder it writes."""
    from helpers import synthetic_contexts

    from sae_lens_routing.interpret.contexts import write_contexts

    sae_dir, ctx, out = tmp_path / "sae", tmp_path / "contexts.json", out or tmp_path / "out"
    if not sae_dir.exists():
        make_sae().save_model(sae_dir)
        write_contexts(synthetic_contexts(n_features), ctx)
    argv = ["interpret", "--sae", str(sae_dir), "--out", str(out), "--contexts", str(ctx), "--judge-url",
            server_url, "--judge-model", "judge", "--n-features", str(n_features), *extra]  # fmt: skip
    return argv, out


def test_a_key_in_the_judge_url_is_neither_stored_nor_printed(judge_server, tmp_path, capsys):
    server = judge_server()
    url = server.url.replace("http://", f"http://user:{SECRET}@")
    argv, out = judged_run(tmp_path, url)
    assert cli(argv) == 0
    printed = "".join(capsys.readouterr())
    stored = json.loads((out / "interpretability.json").read_text())
    assert stored["judge_url"] == server.url  # the user-info stripped
    assert SECRET not in printed and all(SECRET.encode() not in p.read_bytes() for p in out.rglob("*.*"))


def test_a_key_pasted_as_api_key_env_is_refused_without_echoing_it(judge_server, tmp_path, capsys):
    argv, out = judged_run(tmp_path, judge_server().url, "--api-key-env", SECRET)
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "--api-key-env takes the NAME" in err and SECRET not in err and not out.exists()


@pytest.mark.parametrize("retry_after", ["100000", "inf"])
def test_a_huge_retry_after_never_waits_without_end(judge_server, tmp_path, capsys, retry_after):
    """openai's client honours a Retry-After of at most 2 minutes; above that it stops (one line) or backs
    off for seconds; it never sleeps for the header's value or raises OverflowError."""
    server = judge_server(actions=[{"status": 429, "retry_after": retry_after}])
    argv, _ = judged_run(tmp_path, server.url)
    start = time.time()
    rc = cli(argv)
    err = capsys.readouterr().err
    assert time.time() - start < 30
    assert rc == 0 or (rc == 2 and "HTTP 429" in err and "Traceback" not in err), err


@pytest.mark.parametrize("raw, kind", [("<html><body>Please log in</body></html>", "text/html"),
                                       ('{"choices": [{"message": {"content": "x"}}, ]', "application/json")])
def test_a_judge_answering_html_or_broken_json_is_one_line(judge_server, tmp_path, capsys, raw, kind):
    server = judge_server(actions=[{"raw": raw, "type": kind}] * 8)
    argv, _ = judged_run(tmp_path, server.url, n_features=1)
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: the judge at") and "--judge-url" in err


@pytest.mark.parametrize("damage", ["{\"content\": \"1\", \"us", "", '{"content": "x"}'])
def test_a_damaged_stored_answer_is_named_dropped_and_asked_again(judge_server, tmp_path, capsys, damage):
    server = judge_server()
    argv, out = judged_run(tmp_path, server.url, n_features=1)
    assert cli(argv) == 0
    stored = next((out / "judge_cache").glob("*.json"))
    stored.write_text(damage)
    n_before = len(server.requests())
    assert cli(argv) == 0
    assert f"{stored} is damaged" in capsys.readouterr().err
    assert len(server.requests()) == n_before + 1 and json.loads(stored.read_text())["usage"]


def test_a_judge_ignoring_max_tokens_is_stored_cut_to_size(judge_server, tmp_path):
    from sae_lens_routing.interpret.judge import MAX_ANSWER_CHARS

    server = judge_server(actions=[{"content": "Feature category: Low-level\nScore: 4\n" + "x" * 200_000}])
    argv, out = judged_run(tmp_path, server.url, n_features=1)
    assert cli(argv) == 0
    stored = [json.loads(p.read_text()) for p in (out / "judge_cache").glob("*.json")]
    assert max(len(s["content"]) for s in stored) == MAX_ANSWER_CHARS
    assert (out / "interpretability.json").stat().st_size < 50_000


@pytest.mark.parametrize("command", ["interpret", "evaluate"])
def test_interpret_and_evaluate_never_replace_a_user_folder(judge_server, tmp_path, capsys, command):
    folder = user_folder(tmp_path / "mine")
    argv, _ = judged_run(tmp_path, judge_server().url, out=folder)
    if command == "evaluate":
        argv = ["evaluate", "--sae", "never-loaded", "--out", str(folder)]
    assert cli(argv) == 2
    assert "--out=" in capsys.readouterr().err  # refused before the SAE or the model loads
    assert sorted(p.name for p in folder.rglob("*")) == ["data.csv", "notes.txt", "sub"]
    # a folder the command wrote itself may be written again
    argv, out = judged_run(tmp_path, judge_server().url, out=tmp_path / "again")
    assert command == "evaluate" or (cli(argv) == 0 and cli(argv) == 0)


def test_interpret_dry_run_writes_nothing(tmp_path, capsys):
    from helpers import tiny_hf_llama_folder

    from sae_lens_routing import RouteSAE, RouteSAEConfig
    from sae_lens_routing.interpret import JudgeConfig, interpret_features
    from sae_lens_routing.offline.corpus import corpus_tokens
    from sae_lens_routing.offline.local_model import load_local_model

    model, out = load_local_model(tiny_hf_llama_folder(tmp_path / "model")), tmp_path / "out"
    hooks = [f"blocks.{i}.hook_resid_post" for i in (1, 2, 3)]
    sae = RouteSAE(RouteSAEConfig(d_in=32, d_sae=32, k=4, hook_names=hooks)).eval()
    judge = JudgeConfig(url="http://127.0.0.1:9/v1", model="gpt-4o")
    tokens = corpus_tokens(model, "python-topics", 40, 32)
    try:
        interpret_features(sae, model, judge=judge, out=out, tokens=tokens, dry_run=True, n_features=2)
    except ValueError as e:  # a random SAE may count no feature: refused, and still nothing written
        assert "nothing to judge" in str(e)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--out", "--neuronpedia"])
def test_dashboard_outputs_that_are_folders_or_existing_files_are_refused_up_front(tmp_path, capsys, flag):
    folder, existing = user_folder(tmp_path / "mine"), tmp_path / "page.html"
    existing.write_text("mine")
    for path in (folder, existing):
        argv = ["dashboard", "--sae", "never-loaded", "--out", str(tmp_path / "a.html")]
        argv += [flag, str(path)] if flag != "--out" else []
        argv[4] = str(path) if flag == "--out" else argv[4]
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert f"{flag}=" in err and ("a folder" in err if path == folder else "--overwrite" in err)
    assert existing.read_text() == "mine"


def test_sigterm_ends_interpret_in_seconds_sending_nothing_new_and_says_what_was_kept(judge_server, tmp_path):
    server = judge_server(delay=1.0)
    argv, out = judged_run(tmp_path, server.url, n_features=8)
    proc = subprocess.Popen([sys.executable, "-m", "sae_lens_routing", *argv, "--protocol", "both"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(list((out / "judge_cache").glob("*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.terminate()
    stopped = time.time()
    _, err = proc.communicate(timeout=30)
    n_sent = len(server.requests())
    time.sleep(1.5)
    kept = len(list((out / "judge_cache").glob("*.json")))
    assert proc.returncode == 130 and time.time() - stopped < 15  # in-flight retries back off <= ~4 s
    assert f"{kept} judge answers are kept" in err and "nothing was saved" not in err
    assert len(server.requests()) == n_sent  # nothing sent after the stop


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("lr", -1e-4), ("store_batch_size_prompts", 0)])
def test_settings_that_cannot_be_meant_are_refused_before_loading(tmp_path, monkeypatch, field, value):
    refuse_loaders(monkeypatch)
    with pytest.raises(ValueError, match=f"{field} must be"):
        RouteSAETrainingRunner(route_runner_cfg(tmp_path, **{field: value}))


def test_train_with_a_null_output_path_is_refused_and_summaries_never_say_none(tmp_path, monkeypatch, capsys):
    from sae_lens_routing.training.runner import format_summary

    config = write_config(tmp_path, output_path=None)
    refuse_loaders(monkeypatch)
    assert cli(["train", "--config", str(config)]) == 2
    assert "output_path is null" in capsys.readouterr().err
    summary = {"output_path": None, "normalized_mse": 0.1, "explained_variance": 0.9, "l0": 4.0,
               "dead_latents": 0, "d_sae": 8, "training_tokens": 8, "routing_share": {"a": 1.0},
               "routing_entropy_bits": 0.0}  # fmt: skip
    assert "None" not in format_summary(summary).splitlines()[0]


@pytest.mark.parametrize("flags, expected", [
    (["--feature", "1=8", "--temperature", "-1"], "--temperature: must be a finite number >= 0"),
    (["--feature", "1=8", "--feature", "1=-8"], "--feature gives latent [1] more than once"),
])  # fmt: skip
def test_steer_refuses_a_negative_temperature_and_a_repeated_latent(capsys, flags, expected):
    with pytest.raises(SystemExit) if "temperature" in expected else contextlib.nullcontext():
        assert cli(["steer", "--sae", "never-loaded", "--prompt", "a b", *flags]) == 2
    assert expected in capsys.readouterr().err


def test_unknown_fields_in_a_saved_cfg_json_are_named_in_a_warning(tmp_path):
    """`load_route_sae` warns (`SAE.load_from_disk` drops unknown fields before our code sees them)."""
    from sae_lens_routing import load_route_sae

    make_sae().save_model(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({**cfg, "routnig": "soft", "k_aux": 3}))
    with pytest.warns(UserWarning, match=r"unknown fields \['k_aux', 'routnig'\] are ignored"):
        load_route_sae(str(tmp_path / "sae"))


def test_an_interpret_dry_run_into_a_user_folder_runs_and_touches_nothing(judge_server, tmp_path, capsys):
    folder = user_folder(tmp_path / "mine")
    argv, _ = judged_run(tmp_path, judge_server().url, "--dry-run", out=folder)
    assert cli(argv) == 0 and "dry run: nothing sent" in capsys.readouterr().out
    assert sorted(p.name for p in folder.rglob("*")) == ["data.csv", "notes.txt", "sub"]


def test_a_negative_looking_value_says_how_to_pass_it(capsys):
    with pytest.raises(SystemExit):
        cli(["steer", "--sae", "never-loaded", "--prompt", "a b", "--feature", "-1=8"])
    assert "goes after '=', e.g. --feature=-1=8" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # passed that way, the value itself is refused by name
        cli(["steer", "--sae", "never-loaded", "--prompt", "a b", "--feature=-1=8"])
    assert "--feature: must be INDEX=VALUE with INDEX a latent index >= 0" in capsys.readouterr().err


def test_a_judge_that_never_answers_ends_in_one_line_within_its_timeout(judge_server, tmp_path, capsys):
    """Each request has a deadline (--judge-timeout, openai retries it 3 times, saying so on stderr)."""
    server = judge_server(actions=[{"sleep": 600}] * 8)
    argv, out = judged_run(tmp_path, server.url, "--judge-timeout", "1", n_features=1)
    start = time.time()
    rc = cli(argv)
    err = capsys.readouterr().err
    assert rc == 2 and time.time() - start < 40, err
    assert "gave no usable answer (APITimeoutError)" in err and "Traceback" not in err
    assert "judge: Retrying request" in err and len(server.requests()) == 4


@pytest.mark.parametrize("damage", ["{", "[1, 2]", '{"format_version": 1, "hooks": 3}'])
def test_a_damaged_cache_metadata_file_is_named_in_one_line(tmp_path, damage):
    from sae_lens_routing.training.activation_cache import METADATA_FILENAME, read_cache_metadata

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / METADATA_FILENAME).write_text(damage)
    with pytest.raises(ValueError, match=rf"its {METADATA_FILENAME} is damaged .*rebuild it with") as e:
        read_cache_metadata(tmp_path / "cache")
    assert "\n" not in str(e.value)
