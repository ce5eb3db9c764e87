"""save_inference_model -> SAE.load_from_disk / TrainingSAE.load_from_disk in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from helpers import make_training_sae
from sae_lens.saes.sae import TrainStepInput


def test_roundtrip_in_fresh_process(tmp_path):
    sae = make_training_sae()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(5):  # move weights away from init (and decoder norms away from 1)
        acts = torch.randn(64, 4, 16)
        sae.training_forward_pass(
            TrainStepInput(
                sae_in=acts,
                coefficients={},
                dead_neuron_mask=None,
                n_training_steps=step,
                is_logging_step=False,
            )
        ).loss.backward()
        opt.step()
        opt.zero_grad()
    acts = torch.randn(10, 4, 16)
    expected = sae.forward_routed(acts)
    sae.save_inference_model(tmp_path / "sae")
    torch.save({"acts": acts}, tmp_path / "acts.pt")
    script = textwrap.dedent(
        f"""
        import torch, sae_lens_routing
        from sae_lens import SAE, TrainingSAE
        acts = torch.load({str(tmp_path / "acts.pt")!r})["acts"]
        out = {{}}
        for cls in (SAE, TrainingSAE):
            sae = cls.load_from_disk({str(tmp_path / "sae")!r})
            assert type(sae).__name__ == ("RouteSAE" if cls is SAE else "RouteTrainingSAE"), type(sae)
            r = sae.forward_routed(acts)
            out[cls.__name__] = {{
                "sae_out": r.sae_out, "feature_acts": r.feature_acts, "layer_index": r.layer_index
            }}
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    loaded = torch.load(tmp_path / "out.pt")
    for name in ("SAE", "TrainingSAE"):
        torch.testing.assert_close(loaded[name]["sae_out"], expected.sae_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded[name]["feature_acts"], expected.feature_acts, atol=1e-5, rtol=1e-5)
        assert torch.equal(loaded[name]["layer_index"], expected.layer_index)


def test_plain_sae_lens_without_plugin_fails_clearly(tmp_path):
    make_training_sae().save_inference_model(tmp_path / "sae")
    script = f"from sae_lens import SAE; SAE.load_from_disk({str(tmp_path / 'sae')!r})"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode != 0 and "routesae" in res.stderr
