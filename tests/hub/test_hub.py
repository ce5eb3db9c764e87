"""Upload with SAELens's uploader (network boundary recorded), load back through the real huggingface_hub code
from an offline cache, the named-release registry, and the upload CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from hub_fixtures import folder_files, offline_cache, populate_hf_cache, record_hub, train_and_save
from sae_lens import SAE

from sae_lens_routing import (
    RouteSAE,
    get_routed_saes_directory,
    load_route_sae,
    load_route_sae_with_cfg_and_sparsity,
    upload_route_sae,
)
from sae_lens_routing.cli.main import main

REPO = "org/routesae-tiny"
SHARES = [0.1, 0.2, 0.3, 0.4]


def _assert_same_outputs(loaded: RouteSAE, original: torch.nn.Module, acts: torch.Tensor) -> None:
    want, got = original.forward_routed(acts), loaded.forward_routed(acts.to(loaded.dtype))
    torch.testing.assert_close(got.sae_out.float(), want.sae_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.feature_acts.float(), want.feature_acts, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.layer_index, want.layer_index)


def test_upload_exact_files_then_load_from_cache(tmp_path, monkeypatch):
    folder = tmp_path / "run" / "final"
    folder.mkdir(parents=True)
    sae, log_sparsity = train_and_save(folder)
    (folder / "notes.txt").write_text("not part of an SAE upload")
    hub = record_hub(monkeypatch)

    uploaded = upload_route_sae(
        folder, REPO, "tiny", routing_shares=SHARES, metrics={"explained_variance": 0.8}
    )

    sae_commit, card_commit = hub.commits
    assert sorted(sae_commit) == [
        "tiny/cfg.json",
        "tiny/runner_cfg.json",
        "tiny/sae_weights.safetensors",
        "tiny/sparsity.safetensors",
    ]
    assert sorted(card_commit) == ["README.md", "tiny/README.md", "tiny/routing_share.png"]
    assert uploaded == sorted([*sae_commit, *card_commit])
    assert sae_commit["tiny/sae_weights.safetensors"] == (folder / "sae_weights.safetensors").read_bytes()
    assert card_commit["tiny/routing_share.png"][:8] == b"\x89PNG\r\n\x1a\n"
    card = card_commit["tiny/README.md"].decode()
    for expected in (
        "library_name: saelens",
        "tiny-random",
        "`blocks.0.hook_resid_post`",
        "| d_in / d_sae | 16 / 64 |",
        "| k (TopK) | 4 |",
        "| routing / router input | hard / sum |",
        "| training tokens | 12,345 |",
        "| l0 | 4 |",
        "| explained_variance | 0.8 |",
        "![share of tokens routed to each layer](routing_share.png)",
        "`blocks.3.hook_resid_post` 40.0%",
        f'SAE.from_pretrained("{REPO}", "tiny")',
    ):
        assert expected in card, expected
    assert "](tiny/routing_share.png)" in card_commit["README.md"].decode()
    assert (folder / "README.md").read_text() == card

    # round trip: what was sent -> the cache a download would leave -> SAE.from_pretrained, offline
    populate_hf_cache(tmp_path / "hf", REPO, hub.files())
    offline_cache(monkeypatch, tmp_path / "hf")
    loaded, cfg, sparsity = SAE.from_pretrained_with_cfg_and_sparsity(REPO, "tiny")
    assert isinstance(loaded, RouteSAE) and cfg["hook_names"] == sae.cfg.hook_names
    torch.testing.assert_close(sparsity, log_sparsity)
    acts = torch.randn(10, 4, 16)
    _assert_same_outputs(loaded, sae, acts)
    as64 = load_route_sae(REPO, "tiny", dtype="float64")
    assert as64.W_enc.dtype == torch.float64 and as64.W_router.device.type == "cpu"
    _assert_same_outputs(as64, sae, acts)


def test_second_upload_keeps_existing_root_readme(tmp_path, monkeypatch):
    folder = tmp_path / "sae"
    folder.mkdir()
    train_and_save(folder, sparsity=False, runner_cfg=False)
    hub = record_hub(monkeypatch)
    hub.readme_exists = True
    uploaded = upload_route_sae(folder, REPO)  # sae_id defaults to the folder name; no shares -> no chart
    assert uploaded == ["sae/README.md", "sae/cfg.json", "sae/sae_weights.safetensors"]
    card = hub.commits[1]["sae/README.md"].decode()
    assert "| training tokens | not recorded |" in card and "## Routing share\n\nNot recorded." in card


def test_upload_dry_run_sends_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "sae"
    folder.mkdir()
    train_and_save(folder, runner_cfg=False)
    hub = record_hub(monkeypatch)
    planned = upload_route_sae(folder, REPO, "k4", routing_shares=SHARES, dry_run=True)
    assert hub.commits == []
    assert planned == [
        "README.md",
        "k4/README.md",
        "k4/cfg.json",
        "k4/routing_share.png",
        "k4/sae_weights.safetensors",
        "k4/sparsity.safetensors",
    ]
    # a dry run writes nothing
    assert not (folder / "README.md").exists() and not (folder / "routing_share.png").exists()
    assert "README.md" not in upload_route_sae(folder, REPO, "k4", root_card=False, dry_run=True)
    with pytest.raises(ValueError, match="cfg.json is missing"):
        upload_route_sae(tmp_path, REPO, "x", dry_run=True)  # the same checks as a real upload


def test_hub_revision(tmp_path, monkeypatch):
    """`revision` reaches `snapshot_download`: a tag loads its own weights, the default loads main."""
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, steps in ((old, 1), (new, 5)):
        folder.mkdir()
        train_and_save(folder, steps=steps, runner_cfg=False)
    populate_hf_cache(tmp_path / "hf", REPO, folder_files(old, "k4"), commit="a" * 40, ref="v1")
    populate_hf_cache(tmp_path / "hf", REPO, folder_files(new, "k4"), commit="b" * 40)
    offline_cache(monkeypatch, tmp_path / "hf")
    want_old = SAE.load_from_disk(old).W_enc
    assert torch.equal(load_route_sae(REPO, "k4", revision="v1").W_enc, want_old)
    assert torch.equal(load_route_sae(REPO, "k4").W_enc, SAE.load_from_disk(new).W_enc)
    assert not torch.equal(want_old, SAE.load_from_disk(new).W_enc)


def test_upload_validates_inputs(tmp_path, monkeypatch):
    folder = tmp_path / "sae"
    folder.mkdir()
    train_and_save(folder, sparsity=False, runner_cfg=False)
    hub = record_hub(monkeypatch)
    with pytest.raises(ValueError, match="repo_id must look like 'org/name'"):
        upload_route_sae(folder, "no-slash")
    with pytest.raises(ValueError, match="sae_id must be a relative folder path"):
        upload_route_sae(folder, REPO, "../escape")
    with pytest.raises(ValueError, match="one value per routed hook \\(4\\), got 3"):
        upload_route_sae(folder, REPO, routing_shares=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="must sum to 1"):
        upload_route_sae(folder, REPO, routing_shares=[10, 20, 30, 40])
    with pytest.raises(ValueError, match="cfg.json is missing"):
        upload_route_sae(tmp_path, REPO, "x")
    assert hub.commits == []


def test_from_pretrained_offline_in_fresh_process(tmp_path):
    """The user's view: a fresh interpreter, HF_HUB_OFFLINE=1 and HF_HUB_CACHE in the environment, a cache
    holding the repo as a download leaves it (no sparsity file on the Hub: `.no_exist` marker)."""
    folder = tmp_path / "sae"
    folder.mkdir()
    sae, _ = train_and_save(folder, sparsity=False, runner_cfg=False)
    populate_hf_cache(
        tmp_path / "hf", REPO, folder_files(folder, "l0-4"), missing=("l0-4/sparsity.safetensors",)
    )
    acts = torch.randn(10, 4, 16)
    torch.save({"acts": acts}, tmp_path / "acts.pt")
    script = textwrap.dedent(
        f"""
        import torch, sae_lens_routing
        from sae_lens import SAE
        acts = torch.load({str(tmp_path / "acts.pt")!r})["acts"]
        sae, cfg, sparsity = SAE.from_pretrained_with_cfg_and_sparsity({REPO!r}, "l0-4")
        assert type(sae).__name__ == "RouteSAE" and sparsity is None
        checked = sae_lens_routing.load_route_sae({REPO!r}, "l0-4")
        out = {{name: s.forward_routed(acts).sae_out for name, s in (("plain", sae), ("checked", checked))}}
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = torch.load(tmp_path / "out.pt")
    want = sae.forward_routed(acts).sae_out
    for name in ("plain", "checked"):
        torch.testing.assert_close(out[name], want, atol=1e-5, rtol=1e-5)


def test_named_release_registry(tmp_path, monkeypatch):
    assert get_routed_saes_directory() == {}  # the packaged registry: nothing published yet
    folder = tmp_path / "sae"
    folder.mkdir()
    sae, log_sparsity = train_and_save(folder)
    populate_hf_cache(tmp_path / "hf", REPO, folder_files(folder, "layers_0-3/k4"))
    offline_cache(monkeypatch, tmp_path / "hf")
    registry = tmp_path / "releases.yaml"
    registry.write_text(
        f"tiny-release:\n  repo_id: {REPO}\n  model: tiny-random\n  saes:\n  - id: k4\n"
        "    path: layers_0-3/k4\n"
        "    l0: 4\n"
    )
    directory = get_routed_saes_directory(registry=registry)  # the keyword load_route_sae takes
    assert directory["tiny-release"].saes_map == {"k4": "layers_0-3/k4"}
    assert directory["tiny-release"].expected_l0 == {"k4": 4}
    loaded, _, sparsity = load_route_sae_with_cfg_and_sparsity("tiny-release", "k4", registry=registry)
    _assert_same_outputs(loaded, sae, torch.randn(6, 4, 16))
    torch.testing.assert_close(sparsity, log_sparsity)
    with pytest.raises(ValueError, match="sae_id 'k8' not found in release 'tiny-release'"):
        load_route_sae("tiny-release", "k8", registry=registry)
    with pytest.raises(ValueError, match="not a local folder, not a release"):
        load_route_sae("no-such-release", "k4", registry=registry)
    registry.write_text(f"bad:\n  repo_id: {REPO}\n  conversion_func: gemma_2\n  saes: []\n")
    with pytest.raises(ValueError, match="conversion_func 'gemma_2'"):
        get_routed_saes_directory(registry)
    # a local folder works too, sparsity included
    loaded, _, sparsity = load_route_sae_with_cfg_and_sparsity(tmp_path, "sae")
    torch.testing.assert_close(sparsity, log_sparsity)


def test_cli_upload_dry_run_and_upload(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "final"
    folder.mkdir()
    train_and_save(folder)
    (tmp_path / "metrics.json").write_text(json.dumps({"explained_variance": 0.75}))
    hub = record_hub(monkeypatch)
    args = ["upload", "--sae", str(folder), REPO, "--sae-id", "k4"]
    args += ["--metrics", str(tmp_path / "metrics.json")]
    assert main([*args, "--routing-shares", "0.25,0.25,0.25,0.25", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"would upload {REPO}/k4/sae_weights.safetensors" in printed
    assert f"would upload {REPO}/README.md (if the repo has no README.md yet)" in printed
    assert f"would upload {REPO}/k4/routing_share.png" in printed
    assert hub.commits == [] and not (folder / "README.md").exists()
    assert main([*args, "--root-card", "no"]) == 0
    assert sorted(hub.files()) == [
        "k4/README.md",
        "k4/cfg.json",
        "k4/runner_cfg.json",
        "k4/sae_weights.safetensors",
        "k4/sparsity.safetensors",
    ]
    assert f"uploaded {REPO}/k4/README.md" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--routing-shares must be comma-separated numbers"):
        main([*args, "--routing-shares", "a,b", "--dry-run"])


def test_card_shows_the_runs_metrics_and_routing_from_the_folder_each_once(tmp_path, monkeypatch, capsys):
    """`upload` of a trained folder (`--dry-run` plans the chart too): training_metrics.json's numbers and
    routing shares, one row per quantity even when cfg.json's metadata and --metrics name it too (`l0`,
    `sparsity/l0`)."""
    folder = tmp_path / "final"
    folder.mkdir()
    train_and_save(folder)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(4)]
    run = {
        "reconstruction_quality/normalized_mse": 0.125,
        "reconstruction_quality/explained_variance": 0.5,
        "sparsity/l0": 4.0,
        "sparsity/dead_features": 7,
        "routing/entropy_bits": 1.5,
        "training_tokens": 4096,
        **{f"routing/share/{h}": s for h, s in zip(hooks, SHARES, strict=True)},
    }
    (folder / "training_metrics.json").write_text(json.dumps(run))
    hub = record_hub(monkeypatch)
    assert main(["upload", "--sae", str(folder), REPO, "--dry-run"]) == 0
    assert f"would upload {REPO}/final/routing_share.png" in capsys.readouterr().out and hub.commits == []
    assert main(["upload", "--sae", str(folder), REPO, "--root-card", "no"]) == 0
    card = (folder / "README.md").read_text()
    assert hub.commits[-1]["final/README.md"].decode() == card
    for row in ("| normalized_mse | 0.125 |", "| explained_variance | 0.5 |", "| l0 | 4 |",
                "| dead_features | 7 |", "| entropy_bits | 1.5 |", "`blocks.3.hook_resid_post` 40.0%",
                "](routing_share.png)"):  # fmt: skip
        assert card.count(row) == 1, row
    assert "Not recorded" not in card and card.count("| l0 |") == 1
    metrics = '{"sparsity/l0": 3.5}'
    assert main(["upload", "--sae", str(folder), REPO, "--metrics", metrics, "--root-card", "no"]) == 0
    card = (folder / "README.md").read_text()
    assert card.count("| l0 |") == 1 and "| l0 | 3.5 |" in card  # given metrics replace the run's


def test_a_hand_written_readme_is_never_replaced(tmp_path, monkeypatch):
    folder = tmp_path / "sae"
    folder.mkdir()
    train_and_save(folder, runner_cfg=False)
    (folder / "README.md").write_text("my notes")
    hub = record_hub(monkeypatch)
    for dry_run in (True, False):
        with pytest.raises(FileExistsError, match="README.md already exists and was not written by sae-lens"):
            upload_route_sae(folder, REPO, "k4", dry_run=dry_run)
    assert (folder / "README.md").read_text() == "my notes" and hub.commits == []
    (folder / "README.md").unlink()
    upload_route_sae(folder, REPO, "k4")
    upload_route_sae(folder, REPO, "k4")  # its own card is replaced


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_from_pretrained_onto_cuda(tmp_path, monkeypatch):
    folder = tmp_path / "sae"
    folder.mkdir()
    sae, log_sparsity = train_and_save(folder)
    populate_hf_cache(tmp_path / "hf", REPO, folder_files(folder, "k4"))
    offline_cache(monkeypatch, tmp_path / "hf")
    for loaded, _, sparsity in (
        SAE.from_pretrained_with_cfg_and_sparsity(REPO, "k4", device="cuda"),
        load_route_sae_with_cfg_and_sparsity(REPO, "k4", device="cuda"),
    ):
        assert loaded.W_router.device.type == "cuda" and loaded.W_enc.dtype == torch.float32
        assert sparsity.device.type == "cuda"
        acts = torch.randn(32, 4, 16)
        got = loaded.forward_routed(acts.to("cuda")).sae_out.cpu()
        torch.testing.assert_close(got, sae.forward_routed(acts).sae_out, atol=1e-4, rtol=1e-4)


def test_from_pretrained_on_a_plugin_release_names_load_route_sae():
    """SAELens has no hook for another release list: `RouteSAE.from_pretrained` names `load_route_sae`."""
    expected = r"load with sae_lens_routing.load_route_sae\('routed-demo', 'k32'\)"
    with pytest.raises(ValueError, match=expected):
        RouteSAE.from_pretrained("routed-demo", "k32")
