"""The analysis commands (evaluate, steer) on a SAE trained from a local model folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_lens_routing import IntegrityError
from sae_lens_routing.atomic import strict_json
from sae_lens_routing.cli.commands import evaluate as evaluate_command
from sae_lens_routing.cli.main import main

W = "sae_weights.safetensors"


def _strict_loads(text):
    def refuse(constant):
        raise ValueError(f"not JSON: bare {constant}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_command(trained, capsys, monkeypatch):
    """An undefined metric (here CE recovered forced to NaN, as a zero CE gap gives) is written as null."""
    real = evaluate_command.run_route_evals

    def evals_with_undefined_metric(*args, **kwargs):
        assert kwargs["batch_size"] == 2  # --batch-size reaches run_route_evals
        return {**real(*args, **kwargs), "model_performance_preservation/ce_loss_score": float("nan")}

    monkeypatch.setattr(evaluate_command, "run_route_evals", evals_with_undefined_metric)
    out = trained / "eval"
    assert (
        main(
            [
                "evaluate",
                "--sae",
                str(trained / "sae"),
                "--out",
                str(out),
                "--corpus",
                "python-topics",
                "--n-sequences",
                "4",
                "--context-size",
                "24",
                "--threshold",
                "0.5",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    metrics = _strict_loads((out / "eval.json").read_text())
    assert (
        0 <= metrics["sparsity/l0"] <= 4 and metrics["model_performance_preservation/ce_loss_score"] is None
    )
    assert (out / "routing_share.png").stat().st_size > 1000
    contexts = json.loads((out / "feature_contexts.json").read_text())
    assert contexts["n_counted"] == metrics["features/n_counted"]
    assert metrics["features/threshold"] == 0.5 and metrics["features/tokens_read"] > 0
    assert metrics["features/threshold_rule"] == contexts["threshold_rule"] == "absolute (set by the caller)"
    assert "ce_loss_score" in capsys.readouterr().out


def test_steer_command(trained, capsys):
    assert (
        main(
            [
                "steer",
                "--sae",
                str(trained / "sae"),
                "--prompt",
                "the value of",
                "--feature",
                "3=40",
                "--feature",
                "5=40",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "unsteered:" in printed and "steered:" in printed
    with pytest.raises(SystemExit):
        main(["steer", "--sae", str(trained / "sae"), "--prompt", "x", "--feature", "oops"])
    long_prompt = " ".join(["value"] * 600)  # refused before generating: it would rerun 600 tokens per token
    with pytest.raises(ValueError, match=r"--prompt is \d+ tokens; steer takes at most 128 \(the model's"):
        main(["steer", "--sae", str(trained / "sae"), "--prompt", long_prompt, "--feature", "3=40"])


def test_commands_load_through_load_route_sae(trained, tmp_path):
    """`--sae` goes through `load_route_sae`: a damaged folder is refused with a message naming the file."""
    import shutil

    from sae_lens_routing import IntegrityError

    bad = tmp_path / "sae"
    shutil.copytree(trained / "sae", bad)
    weights = bad / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="sae_weights.safetensors"):
        main(["steer", "--sae", str(bad), "--prompt", "x", "--feature", "3=4"])
    with pytest.raises(ValueError, match="sae_id is required"):
        main(["steer", "--sae", "org/name", "--prompt", "x", "--feature", "3=4"])


def test_strict_json():
    text = strict_json({"a": float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": {"d": 2}})
    assert _strict_loads(text) == {"a": None, "b": [1.5, None, None], "c": {"d": 2}}


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["evaluate", "--out", "o", "--n-sequences", "0"], "--n-sequences"),
        (["evaluate", "--out", "o", "--n-sequences", "-3"], "--n-sequences"),
        (["evaluate", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--out", "o", "--context-size", "many"], "--context-size"),
        (["steer", "--prompt", "x", "--feature=-1=5"], "--feature"),
        (["steer", "--prompt", "x", "--feature", "3=nan"], "--feature"),
        (["steer", "--prompt", "x", "--feature", "3=inf"], "--feature"),
        (["steer", "--prompt", "x", "--feature", "x=5"], "--feature"),
        (["steer", "--prompt", "x", "--feature", "3=4", "--max-new-tokens", "0"], "--max-new-tokens"),
    ],
)
def test_bad_arguments_refused_by_argparse(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--sae", str(tmp_path / "never-read")])
    assert exc.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


def test_steer_refuses_feature_beyond_d_sae(trained):
    with pytest.raises(ValueError, match=r"--feature index \[64\] out of range: this SAE has d_sae=64"):
        main(
            ["steer", "--sae", str(trained / "sae"), "--prompt", "x", "--feature", "3=1", "--feature", "64=1"]
        )


def _edit_weights(fn):
    def mutate(folder):
        state = load_file(folder / W)
        fn(state)
        save_file(state, folder / W)

    return mutate


def _drop_k(folder):
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["k"]
    (folder / "cfg.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _edit_weights(lambda s: s["W_enc"].__setitem__((0, 0), float("nan"))),
            f"{W}: W_enc has 1 non-finite",
        ),
        (lambda f: (f / W).write_bytes((f / W).read_bytes()[:-100]), f"{W} is truncated or corrupted"),
        (lambda f: torch.save({"W_enc": torch.zeros(2)}, f / W), f"{W} is not a safetensors file: .*pickle"),
        (
            _edit_weights(lambda s: [t.zero_() for t in s.values()]),
            f"{W}: W_dec is all zeros: not a trained RouteSAE",
        ),
        (_drop_k, "cfg.json: missing field k "),
    ],
    ids=["nan", "truncated", "pickled", "all-zero", "no-k"],
)
def test_evaluate_refuses_damaged_sae_at_load(trained, tmp_path, mutate, message):
    """Refused by the checking loader (`_common.load_sae_and_model`, shared by dashboard) before any eval."""
    bad = tmp_path / "sae"
    shutil.copytree(trained / "sae", bad)
    mutate(bad)
    with pytest.raises(IntegrityError, match=message):
        main(["evaluate", "--sae", str(bad), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_loading_a_sae_trained_on_a_local_model_is_silent(trained, recwarn):
    """No `model_from_pretrained_kwargs` warning: a local model is loaded unprocessed, no kwargs were applied,
    so none are recorded; given ones are refused at config time."""
    from sae_lens import SAE

    from sae_lens_routing import load_route_sae
    from sae_lens_routing.training.run_config import load_run_config

    for sae in (load_route_sae(trained / "sae"), SAE.load_from_disk(trained / "sae")):
        assert sae.cfg.metadata.model_from_pretrained_kwargs == {}
    assert not [w for w in recwarn if "model_from_pretrained_kwargs" in str(w.message)]
    with pytest.raises(ValueError, match="model_from_pretrained_kwargs apply to model_name loads only"):
        load_run_config(trained / "run.yaml", ["model_from_pretrained_kwargs={fold_ln: true}"])
