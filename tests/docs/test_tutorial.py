"""docs/tutorial.ipynb runs top to bottom on the bundled model (train, evaluate, dashboard, steer)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[2] / "docs" / "tutorial.ipynb"


@pytest.mark.real_model
def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel imports this checkout's package, whatever the working directory
    path = os.pathsep.join([str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    assert "RouteSAE saved to: tutorial_out/sae" in outputs
    assert "reconstruction_quality/normalized_mse" in outputs
    assert "top:8 requested" in outputs and "steered:" in outputs
    assert "routing-panel" in (tmp_path / "tutorial_out" / "dashboard.html").read_text()
