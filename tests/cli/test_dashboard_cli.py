"""The dashboard and neuronpedia commands on a SAE trained from a local model folder."""

from __future__ import annotations

import json
import re

import pytest

from sae_lens_routing.cli.main import main


def test_dashboard_and_neuronpedia_commands(trained, capsys, monkeypatch):
    """One `dashboard --neuronpedia` run computes the data once (one sae-dashboard run, one routed scan) and
    writes both files from it; the default is the 24 latents with the largest activations, strongest first."""
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    import sae_lens_routing.dashboard.report as report

    calls = {"run": 0, "scan": 0}
    run, scan = SaeVisRunner.run, report.scan_tokens

    def spy(name, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(SaeVisRunner, "run", spy("run", run))
    monkeypatch.setattr(report, "scan_tokens", spy("scan", scan))
    args = [
        "--sae",
        str(trained / "sae"),
        "--corpus",
        "python-topics",
        "--n-sequences",
        "8",
        "--context-size",
        "24",
    ]
    html, np_json = trained / "d.html", trained / "np.json"
    assert (
        main(["dashboard", *args, "--features", "top:4", "--out", str(html), "--neuronpedia", str(np_json)])
        == 0
    )
    assert calls == {"run": 1, "scan": 1}
    assert "top:4 requested: the 4 most active of the" in capsys.readouterr().out
    page = html.read_text()
    panel = json.loads(re.search(r"id='routing-panel-data'>(.*?)</script>", page, re.S).group(1))
    start = json.loads(re.search(r"const START_KEY = (\"[^\"]*\");", page).group(1))
    batch = json.loads(np_json.read_text())
    assert [f["feature_index"] for f in batch["features"]] == panel["order"] and len(panel["order"]) == 4
    assert start == str(panel["order"][0]) and batch["dead_latents"] == panel["dead_latents"]
    assert "routing" in batch["features"][0] and max(batch["features"][0]["activations"][0]["values"]) > 0
    assert main(["neuronpedia", *args, "--features", "0-3", "--out", str(trained / "np2.json")]) == 0
    np2 = json.loads((trained / "np2.json").read_text())
    assert {f["feature_index"] for f in np2["features"]} | set(np2["dead_latents"]) == {0, 1, 2, 3}
    assert main(["dashboard", *args, "--out", str(trained / "default.html")]) == 0  # default: top:24
    printed = capsys.readouterr().out
    fired = 64 - int(re.search(r"(\d+) of the SAE's 64 latents never fired", printed).group(1))
    assert f"top:24 requested: the 24 most active of the {fired} latents that fired" in printed


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_n_sequences_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--sae", "unused", "--n-sequences", value, "--out", "x.html"])
    assert exit_info.value.code == 2
    assert f"argument --n-sequences: must be a positive integer, got '{value}'" in capsys.readouterr().err
