"""Converters for official RouteSAE `.pt` checkpoints (+ sidecar): from disk and from a Hub cache, through
SAELens's `converter=` parameter; they must reproduce the official code's own vectors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import OFFICIAL_CKPT, OFFICIAL_VECTORS
from hub_fixtures import offline_cache, populate_hf_cache
from sae_lens import SAE
from safetensors.torch import load_file

from sae_lens_routing import (
    IntegrityError,
    RouteSAE,
    load_route_sae,
    official_disk_loader,
    official_huggingface_loader,
    paper_hook_names,
)
from sae_lens_routing.loading.official import OFFICIAL_SIDECAR_FILENAME

CKPT_NAME = "RouteSAE_8L_k8.pt"


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    return load_file(OFFICIAL_VECTORS)


def _official_folder(tmp_path, **sidecar):
    folder = tmp_path / "official"
    folder.mkdir(exist_ok=True)
    shutil.copy(OFFICIAL_CKPT, folder / CKPT_NAME)
    (folder / OFFICIAL_SIDECAR_FILENAME).write_text(json.dumps({"checkpoint": CKPT_NAME, "k": 8, **sidecar}))
    return folder


def _assert_matches_official(sae, vectors, router_input, routing):
    out = sae.forward_routed(vectors["hidden_states"])
    prefix = f"{router_input}_{routing}."
    torch.testing.assert_close(out.router_weights, vectors[prefix + "router_weights"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.sae_in, vectors[prefix + "routed_x"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.feature_acts, vectors[prefix + "latents"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.sae_out, vectors[prefix + "x_hat"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("router_input", "routing"), [("sum", "hard"), ("mean", "soft")])
def test_disk_converter_reproduces_official_vectors(tmp_path, vectors, router_input, routing):
    folder = _official_folder(
        tmp_path, n_layers=8, routing=routing, router_input=router_input, model_name="tiny"
    )
    sae = SAE.load_from_disk(folder, converter=official_disk_loader)
    assert isinstance(sae, RouteSAE) and sae.cfg.hook_names == paper_hook_names(8)
    assert sae.cfg.topk_relu is False and sae.cfg.k == 8
    # metadata survives (sae_lens_version >= 6, so SAELens's pre-6.0 path does not rebuild it)
    assert sae.cfg.metadata.model_name == "tiny" and sae.cfg.metadata.hook_name == "blocks.5.hook_resid_post"
    _assert_matches_official(sae, vectors, router_input, routing)
    # load_route_sae recognises the sidecar
    _assert_matches_official(load_route_sae(folder), vectors, router_input, routing)


def test_hub_converter_from_offline_cache(tmp_path, monkeypatch, vectors):
    hooks = paper_hook_names(8)
    sidecar = {"checkpoint": CKPT_NAME, "k": 8, "hook_names": hooks, "routing": "soft", "router_input": "sum"}
    populate_hf_cache(
        tmp_path / "hf",
        "authors/routesae-official",
        {
            f"llama8l/{CKPT_NAME}": OFFICIAL_CKPT.read_bytes(),
            f"llama8l/{OFFICIAL_SIDECAR_FILENAME}": json.dumps(sidecar).encode(),
            f"bare/{CKPT_NAME}": OFFICIAL_CKPT.read_bytes(),
        },
    )
    offline_cache(monkeypatch, tmp_path / "hf")
    sae = SAE.from_pretrained(
        "authors/routesae-official", "llama8l", dtype="float64", converter=official_huggingface_loader
    )
    assert sae.W_enc.dtype == torch.float64
    _assert_matches_official(sae.to(torch.float32), vectors, "sum", "soft")
    # a folder with no sidecar: its fields come from a registry entry's config_overrides
    registry = tmp_path / "releases.yaml"
    registry.write_text(
        "official:\n  repo_id: authors/routesae-official\n  conversion_func: routesae_official\n"
        f"  config_overrides: {{checkpoint: {CKPT_NAME}, k: 8, n_layers: 8, routing: hard}}\n"
        "  saes:\n  - id: bare\n    path: bare\n"
    )
    _assert_matches_official(load_route_sae("official", "bare", registry=registry), vectors, "sum", "hard")
    with pytest.raises(IntegrityError, match="llama8l/missing.pt not found"):
        official_huggingface_loader(
            "authors/routesae-official", "llama8l", cfg_overrides={"checkpoint": "missing.pt"}
        )


class _Payload:
    """A non-tensor object: weights_only loading must refuse to build it."""


def test_non_tensor_pickle_is_refused(tmp_path):
    folder = _official_folder(tmp_path, n_layers=8)
    state = torch.load(OFFICIAL_CKPT, weights_only=True)
    torch.save({**state, "sae.pre_bias": _Payload()}, folder / CKPT_NAME)
    with pytest.raises(ValueError, match="not a weights-only checkpoint .* refusing to unpickle"):
        SAE.load_from_disk(folder, converter=official_disk_loader)


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ({"n_layers": 8, "hook_names": paper_hook_names(8)}, "exactly one of 'hook_names'"),
        ({}, "exactly one of 'hook_names'"),
        ({"n_layers": 8, "k": 0}, "k must be a positive integer"),
        ({"n_layers": 8, "routing": "top2"}, "routing must be one of"),
        ({"n_layers": 8, "checkpoint": "../x.pt"}, "'checkpoint' must name the .pt file"),
        ({"n_layers": 8, "layers": 5}, "unknown sidecar fields \\['layers'\\]"),
        ({"n_layers": 12}, "W_router has shape.*L=len\\(hook_names\\)=7"),
    ],
)
def test_sidecar_validation(tmp_path, sidecar, message):
    folder = _official_folder(tmp_path, **sidecar)
    with pytest.raises(ValueError, match=message):
        SAE.load_from_disk(folder, converter=official_disk_loader)


def test_missing_sidecar(tmp_path):
    folder = _official_folder(tmp_path, n_layers=8)
    (folder / OFFICIAL_SIDECAR_FILENAME).unlink()
    with pytest.raises(IntegrityError, match="routesae_official.json is missing"):
        SAE.load_from_disk(folder, converter=official_disk_loader)


def test_non_finite_official_weights_are_refused(tmp_path):
    folder = _official_folder(tmp_path, n_layers=8)
    state = torch.load(OFFICIAL_CKPT, weights_only=True)
    state["sae.decoder.weight"][0, 0] = float("nan")
    torch.save(state, folder / CKPT_NAME)
    with pytest.raises(IntegrityError, match=f"{CKPT_NAME}: W_dec has 1 non-finite value"):
        load_route_sae(folder)
