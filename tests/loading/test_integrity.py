"""Each corruption case: the plugin's validating loaders fail with a message naming the file and field; what a
user of plain `SAE.load_from_disk` gets is asserted beside it (documented in the README)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hub_fixtures import folder_files, offline_cache, populate_hf_cache, train_and_save
from sae_lens import SAE
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sae_lens_routing import (
    IntegrityError,
    load_route_sae,
    route_sae_disk_loader,
    route_sae_huggingface_loader,
)

W = "sae_weights.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "sae"
    folder.mkdir()
    train_and_save(folder)
    return folder


def _edit_cfg(key, value):
    def mutate(f):
        cfg = json.loads((f / "cfg.json").read_text())
        cfg[key] = value(cfg[key]) if callable(value) else value
        (f / "cfg.json").write_text(json.dumps(cfg))

    return mutate


def _drop_cfg(key):
    def mutate(f):
        cfg = json.loads((f / "cfg.json").read_text())
        del cfg[key]
        (f / "cfg.json").write_text(json.dumps(cfg))

    return mutate


def _edit_weights(f, fn):
    state = load_file(f / W)
    fn(state)
    save_file(state, f / W)


def _cut(n):
    return lambda f: (f / W).write_bytes((f / W).read_bytes()[:n])


def _garble_header(f):
    data = bytearray((f / W).read_bytes())
    data[8:40] = b"\xff" * 32
    (f / W).write_bytes(bytes(data))


# (case, mutation, message of the validating loaders, what plain SAE.load_from_disk raises: (type, match)
# or None)
CASES = [
    (
        "missing cfg.json",
        lambda f: (f / "cfg.json").unlink(),
        "cfg.json is missing",
        (FileNotFoundError, "cfg.json"),
    ),
    (
        "missing weights",
        lambda f: (f / W).unlink(),
        "sae_weights.safetensors is missing",
        (FileNotFoundError, "sae_weights.safetensors"),
    ),
    (
        "truncated data",
        _cut(-100),
        f"{W} is truncated or corrupted .*not fully covered",
        (SafetensorError, "not fully covered"),
    ),
    (
        "truncated header",
        _cut(50),
        f"{W} is truncated or corrupted .*invalid header length",
        (SafetensorError, "invalid header length"),
    ),
    (
        "corrupted header",
        _garble_header,
        f"{W} is truncated or corrupted .*UTF-8",
        (SafetensorError, "UTF-8"),
    ),
    (
        "trailing bytes",
        lambda f: (f / W).write_bytes((f / W).read_bytes() + b"junk"),
        f"{W} is truncated or corrupted .*not fully covered",
        (SafetensorError, "not fully covered"),
    ),
    (
        "pickle instead of safetensors",
        lambda f: torch.save({"W_enc": torch.zeros(2)}, f / W),
        "not a safetensors file: it looks like a torch.save/pickle file",
        (SafetensorError, "header too large"),
    ),
    (
        "shape mismatch (hook_names)",
        _edit_cfg("hook_names", lambda h: h[:3]),
        r"W_router has shape \(16, 4\), but the config expects \(16, 3\) .*L=len\(hook_names\)=3",
        (
            IntegrityError,
            r"RouteSAE weights: W_router has shape \(16, 4\)",
        ),  # our process_state_dict_for_loading
    ),
    (
        "shape mismatch (d_sae)",
        _edit_cfg("d_sae", 32),
        r"W_enc has shape \(16, 64\), but the config expects \(16, 32\)",
        (IntegrityError, r"W_enc has shape \(16, 64\)"),
    ),
    (
        "missing router weights",
        lambda f: _edit_weights(f, lambda s: s.pop("W_router")),
        r"missing \['W_router'\]",
        (IntegrityError, r"missing \['W_router'\]"),
    ),
    (
        "unknown architecture",
        _edit_cfg("architecture", "route_sae"),
        "architecture 'route_sae' is not registered with SAELens. For routed SAEs run "
        "`import sae_lens_routing`",
        (KeyError, "route_sae"),
    ),
    (
        "NaN weights",
        lambda f: _edit_weights(f, lambda s: s["W_dec"].__setitem__((0, 0), float("nan"))),
        rf"{W}: W_dec has 1 non-finite value",
        (IntegrityError, "RouteSAE weights: W_dec has 1 non-finite value"),  # the model's own load check
    ),
    (
        "Inf weights",
        lambda f: _edit_weights(f, lambda s: s["W_enc"][:2, 0].fill_(float("inf"))),
        rf"{W}: W_enc has 2 non-finite values",
        (IntegrityError, "RouteSAE weights: W_enc has 2 non-finite values"),
    ),
    (
        "all-zero weights",
        lambda f: _edit_weights(f, lambda s: [t.zero_() for t in s.values()]),
        rf"{W}: W_dec is all zeros: not a trained RouteSAE",
        (IntegrityError, "W_dec is all zeros"),  # the model's own load check
    ),
    ("cfg without k", _drop_cfg("k"), "cfg.json: missing field k ", None),  # plain SAELens: the default k
    ("cfg without d_sae", _drop_cfg("d_sae"), "cfg.json: missing field d_sae ", (TypeError, "d_sae")),
    (
        "sparsity of the wrong size",
        lambda f: save_file({"sparsity": torch.zeros(3)}, f / "sparsity.safetensors"),
        r"sparsity has shape \(3,\), expected \(64,\)",
        None,
    ),
]


@pytest.mark.parametrize(("case", "mutate", "message", "plain"), CASES, ids=[c[0] for c in CASES])
def test_corruption_case(tmp_path, saved, case, mutate, message, plain):
    folder = tmp_path / "sae"
    shutil.copytree(saved, folder)
    mutate(folder)
    with pytest.raises(IntegrityError, match=message):
        SAE.load_from_disk(folder, converter=route_sae_disk_loader)
    with pytest.raises(IntegrityError, match=message):
        load_route_sae(folder)
    if plain is None:
        SAE.load_from_disk(folder)
    else:
        with pytest.raises(plain[0], match=plain[1]):
            SAE.load_from_disk(folder)


def test_hub_loader_checks_downloaded_files(tmp_path, monkeypatch, saved):
    files = folder_files(saved, "k4")
    cut = {**files, f"k4/{W}": files[f"k4/{W}"][:-10]}
    populate_hf_cache(tmp_path / "hf", "org/truncated", cut)
    no_cfg = {k: v for k, v in files.items() if not k.endswith("cfg.json")}
    populate_hf_cache(tmp_path / "hf", "org/no-cfg", no_cfg, missing=("k4/cfg.json",))
    offline_cache(monkeypatch, tmp_path / "hf")
    with pytest.raises(IntegrityError, match="sae_weights.safetensors is truncated or corrupted"):
        SAE.from_pretrained("org/truncated", "k4", converter=route_sae_huggingface_loader)
    with pytest.raises(IntegrityError, match="org/no-cfg: k4/cfg.json not found"):
        load_route_sae("org/no-cfg", "k4")


def test_input_validation(tmp_path):
    with pytest.raises(ValueError, match="sae_id is required for the Hub repo"):
        load_route_sae("org/name")
    with pytest.raises(ValueError, match="conversion_func must be one of"):
        load_route_sae("org/name", "x", conversion_func="gemma")
