"""The dashboard and neuronpedia commands on a SAE trained from a local model folder."""

from __future__ import annotations

import json

from sae_lens_routing.cli.main import main


def test_dashboard_and_neuronpedia_commands(trained, capsys):
    args = [
        "--sae",
        str(trained / "sae"),
        "--features",
        "0-3",
        "--corpus",
        "python-topics",
        "--n-sequences",
        "8",
        "--context-size",
        "24",
    ]
    assert (
        main(
            ["dashboard", *args, "--out", str(trained / "d.html"), "--neuronpedia", str(trained / "np.json")]
        )
        == 0
    )
    assert "routing-panel" in (trained / "d.html").read_text()
    batch = json.loads((trained / "np.json").read_text())
    assert [f["feature_index"] for f in batch["features"]] == [0, 1, 2, 3] and "routing" in batch["features"][
        0
    ]
    assert main(["neuronpedia", *args, "--out", str(trained / "np2.json")]) == 0
    assert len(json.loads((trained / "np2.json").read_text())["features"]) == 4
