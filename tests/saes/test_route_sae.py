"""The RouteSAE classes: shapes, single-layer API, training step, folding, SAELens's TopK underneath, bad
input."""

from __future__ import annotations

import gc
import json
import threading
import weakref

import pytest
import torch
from helpers import FIXTURES, HOOKS4, make_sae, make_training_sae
from sae_lens import SAE, TrainingSAE
from sae_lens.registry import get_sae_class, get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import (
    TopK,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
    calculate_topk_aux_acts,
)
from safetensors.torch import load_file

from sae_lens_routing import (
    IntegrityError,
    RouteSAE,
    RouteSAEConfig,
    RouteTrainingSAE,
    RouteTrainingSAEConfig,
    normalized_mse,
)
from sae_lens_routing.saes import route_sae
from sae_lens_routing.saes.sae_lens_guards import SingleLayerInputError


def step_input(acts, dead=None, step=0):
    return TrainStepInput(
        sae_in=acts, coefficients={}, dead_neuron_mask=dead, n_training_steps=step, is_logging_step=False
    )


def test_forward_routed_shapes_and_semantics(training_sae):
    acts = torch.randn(3, 5, 4, 16) * 7 + 2
    out = training_sae.forward_routed(acts)
    assert out.router_weights.shape == (3, 5, 4) and out.layer_weights.shape == (3, 5, 4)
    assert out.layer_index.shape == (3, 5) and out.sae_in.shape == (3, 5, 16)
    assert out.feature_acts.shape == (3, 5, 64) and out.sae_out.shape == (3, 5, 16)
    torch.testing.assert_close(out.router_weights.sum(-1), torch.ones(3, 5))
    assert torch.all(out.layer_weights.sum(-1) == 1) and torch.all(out.layer_weights.max(-1).values == 1)
    assert torch.all((out.feature_acts != 0).sum(-1) <= 4) and torch.all(out.feature_acts >= 0)
    # hard routing: the routed input is the picked standardised layer times its router weight
    picked = out.standardized.x[0, 0, out.layer_index[0, 0]]
    torch.testing.assert_close(out.sae_in[0, 0], picked * out.router_weights[0, 0].max())
    # the raw activation at the routed layer is recovered by undoing the standardisation
    torch.testing.assert_close(
        out.routed_layer_input()[0, 0], acts[0, 0, out.layer_index[0, 0]], atol=1e-4, rtol=1e-4
    )


def test_soft_routing_mixes_layers():
    sae = make_training_sae(routing="soft")
    acts = torch.randn(6, 4, 16)
    out = sae.forward_routed(acts)
    torch.testing.assert_close(out.layer_weights, out.router_weights)
    torch.testing.assert_close(out.sae_in, (out.standardized.x * out.router_weights[..., None]).sum(-2))


def test_encode_routes_stacked_input_and_refuses_one_layer(training_sae):
    acts = torch.randn(2, 3, 4, 16)
    routed = training_sae.forward_routed(acts).feature_acts
    torch.testing.assert_close(training_sae.encode(acts), routed)  # [batch, seq, L, d_in]
    torch.testing.assert_close(training_sae.encode(acts.reshape(2, 3, 64)), routed)  # [..., L*d_in]
    feats, hidden_pre = training_sae.encode_with_hidden_pre(acts)
    torch.testing.assert_close(feats, routed)
    torch.testing.assert_close(hidden_pre, training_sae.forward_routed(acts).hidden_pre)
    # one layer's activations (what SAELens's single-hook tools pass) cannot be routed
    for method in (training_sae.encode, training_sae.encode_with_hidden_pre, training_sae):
        with pytest.raises(SingleLayerInputError, match="(?s)routed_splice.*run_route_evals"):
            method(acts[:, :, 0])
    # [n, L, d_in] could be [batch, seq=L, d_in]: not guessed, the message says how to route it
    with pytest.raises(SingleLayerInputError, match="does not guess"):
        training_sae.encode(acts[0, 0:1].expand(5, 4, 16).contiguous())
    with pytest.raises(ValueError, match=r"L\*d_in=64"):
        training_sae.encode(torch.randn(2, 17))


def test_decode_of_encode_is_in_the_input_space(training_sae):
    acts = torch.randn(2, 3, 4, 16) * 5 + 3
    out = training_sae.forward_routed(acts)
    recon = training_sae.decode(training_sae.encode(acts))
    torch.testing.assert_close(recon, out.routed_layer_reconstruction())
    # raw space: undoing the routed layer's own per-token stats and router weight gives back the SAE output
    idx = out.layer_index[..., None, None]
    mean = out.standardized.mean.gather(-2, idx).squeeze(-2)
    std = out.standardized.std.gather(-2, idx).squeeze(-2)
    weight = out.router_weights.gather(-1, out.layer_index[..., None])
    torch.testing.assert_close((recon - mean) / std * weight, out.sae_out, atol=1e-4, rtol=1e-4)
    assert (recon.mean(-1) - out.sae_out.mean(-1)).abs().min() > 1  # not the standardised space (mean 3 here)
    torch.testing.assert_close(training_sae.decode_standardized(out.feature_acts), out.sae_out)
    # features not returned by encode carry no stats: refused, naming decode_standardized
    with pytest.raises(ValueError, match="not returned by this SAE's encode.*decode_standardized"):
        training_sae.decode(out.feature_acts)
    soft = make_training_sae(routing="soft")
    with pytest.raises(ValueError, match="soft-routed.*decode_standardized"):
        soft.decode(soft.encode(acts))


def test_decode_uses_the_stats_of_the_encode_call_that_made_the_features(training_sae):
    """No state on the module: a later encode (another batch) does not change how earlier features decode."""
    x1, x2 = torch.randn(3, 2, 4, 16) * 5 + 3, torch.randn(3, 2, 4, 16) * 0.5 - 7
    f1 = training_sae.encode(x1)
    f2 = training_sae.encode(x2)
    for f, x in ((f1, x1), (f2, x2)):
        want = training_sae.forward_routed(x).routed_layer_reconstruction()
        torch.testing.assert_close(training_sae.decode(f), want)
    f1[..., 0] = 0  # edited in place: still the encode's tensor
    training_sae.decode(f1)
    other = make_training_sae()
    for bad in (f1.clone(), f1 * 2, f1[:1], torch.zeros_like(f1)):
        with pytest.raises(ValueError, match="not returned by this SAE's encode"):
            training_sae.decode(bad)
    with pytest.raises(ValueError, match="not returned by this SAE's encode"):
        other.decode(f1)


def test_one_sae_in_two_threads_gives_each_its_own_result(training_sae):
    inputs = [torch.randn(2, 3, 4, 16) * (i % 5 + 1) + i for i in range(40)]
    with torch.no_grad():
        want = [training_sae(x) for x in inputs]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for _ in range(5):
                for i in range(offset, len(inputs), 2):
                    with torch.no_grad():
                        torch.testing.assert_close(training_sae(inputs[i]), want[i])
        except BaseException as err:  # noqa: BLE001  (reported by the main thread)
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_no_batch_tensor_stays_on_the_module_with_grad_on(training_sae):
    before = dict(vars(training_sae))
    x = torch.randn(2, 3, 4, 16, requires_grad=True)
    f = training_sae.encode(x)
    added = {k: v for k, v in vars(training_sae).items() if k not in before or v is not before[k]}
    assert not {k: v for k, v in added.items() if v is not None}  # nothing of this batch on the module
    training_sae.decode(f).sum().backward()
    assert x.grad is not None and training_sae.W_router.grad is not None  # the stats keep their graph
    stats = weakref.ref(route_sae._ENCODED[f][1].std)
    del f
    gc.collect()
    assert stats() is None  # the stats die with the features


def test_forward_is_decode_of_encode_and_error_term_is_exact(training_sae):
    x = torch.randn(5, 2, 4, 16) * 3 + 1
    out = training_sae.forward_routed(x)
    torch.testing.assert_close(training_sae(x), out.routed_layer_reconstruction())
    training_sae._use_error_term = True
    torch.testing.assert_close(training_sae(x), out.routed_layer_input(), atol=1e-4, rtol=1e-4)
    # a hook zeroing the features is a pure intervention: the error term is computed without hooks, so the
    # output is the input minus the clean reconstruction plus the reconstruction of no features (b_dec)
    training_sae.hook_sae_acts_post.add_hook(lambda acts, hook: acts * 0)
    weight = out.router_weights.gather(-1, out.layer_index[..., None])
    of_nothing = out.standardized.undo(training_sae.b_dec.expand_as(out.sae_out) / weight, out.layer_index)
    expected = out.routed_layer_input() - out.routed_layer_reconstruction() + of_nothing
    torch.testing.assert_close(training_sae(x), expected, atol=1e-4, rtol=1e-4)


def test_activation_folds(training_sae):
    acts = torch.randn(3, 2, 4, 16)
    before = training_sae.forward_routed(acts * 7).feature_acts
    training_sae.fold_activation_norm_scaling_factor(7.0)  # standardisation already removes a constant scale
    torch.testing.assert_close(training_sae.forward_routed(acts).feature_acts, before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not scale-invariant"):
        make_training_sae(standardize=False).fold_activation_norm_scaling_factor(2.0)
    with pytest.raises(ValueError, match="whitening"):
        training_sae.fold_activation_whitening(torch.zeros(16), torch.eye(16), torch.eye(16))


def test_sparse_decode_matches_dense():
    dense = make_training_sae()
    sparse = make_training_sae(use_sparse_activations=True)
    sparse.load_state_dict(dense.state_dict())
    acts = torch.randn(32, 4, 16)
    a, b = dense.forward_routed(acts), sparse.forward_routed(acts)
    torch.testing.assert_close(a.sae_out, b.sae_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.feature_acts, b.feature_acts)
    a_loss = dense.training_forward_pass(step_input(acts)).loss
    b_loss = sparse.training_forward_pass(step_input(acts)).loss
    a_loss.backward()
    b_loss.backward()
    for name in ["W_enc", "W_dec", "W_router", "b_dec"]:
        torch.testing.assert_close(
            getattr(dense, name).grad, getattr(sparse, name).grad, atol=1e-5, rtol=1e-4
        )


def test_training_step_output_and_routing_metrics(training_sae):
    acts = torch.randn(64, 4, 16)
    out = training_sae.training_forward_pass(step_input(acts))
    assert out.sae_in.shape == (64, 16) and out.feature_acts.shape == (64, 64)
    torch.testing.assert_close(out.loss, normalized_mse(out.sae_out, out.sae_in))
    shares = [out.metrics[f"routing/share/blocks.{i}.hook_resid_post"]() for i in range(4)]
    assert abs(sum(shares) - 1) < 1e-5
    assert out.metrics["mse_loss"]().item() > 0
    out.loss.backward()
    assert training_sae.W_router.grad is not None and training_sae.W_router.grad.abs().sum() > 0


def test_aux_loss_only_with_dead_latents():
    sae = make_training_sae(aux_loss_coefficient=1.0)
    acts = torch.randn(64, 4, 16)
    none_dead = sae.training_forward_pass(step_input(acts, dead=torch.zeros(64, dtype=torch.bool)))
    assert none_dead.losses["auxiliary_reconstruction_loss"].item() == 0
    all_dead = sae.training_forward_pass(step_input(acts, dead=torch.ones(64, dtype=torch.bool)))
    aux = all_dead.losses["auxiliary_reconstruction_loss"]
    assert 0 < aux.item() < 10
    torch.testing.assert_close(all_dead.loss, all_dead.losses["normalized_mse_loss"] + aux)


def planted_batch(gen: torch.Generator, dictionary: torch.Tensor, n: int, n_layers: int = 4, active: int = 3):
    """Each layer of each token is a sparse combination of `active` atoms of a shared dictionary."""
    n_atoms, d = dictionary.shape
    idx = torch.stack([torch.randperm(n_atoms, generator=gen)[:active] for _ in range(n * n_layers)])
    coef = torch.rand(n * n_layers, active, generator=gen) * 2 + 1
    acts = (coef[..., None] * dictionary[idx]).sum(1)
    return (acts + 0.01 * torch.randn(acts.shape, generator=gen)).reshape(n, n_layers, d)


def test_training_learns_planted_structure():
    gen = torch.Generator().manual_seed(0)
    dictionary = torch.nn.functional.normalize(torch.randn(48, 16, generator=gen), dim=-1)
    sae = make_training_sae(d_sae=96, k=6)
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    losses = []
    for step in range(300):
        out = sae.training_forward_pass(step_input(planted_batch(gen, dictionary, 256), step=step))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    start, end = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert start > 0.3  # the default init (the official encoder scale) starts nearer than a tied one (0.5)
    assert end < 0.15, f"normalised MSE only fell from {start:.3f} to {end:.3f}"


def test_fold_W_dec_norm_keeps_outputs():
    sae = make_training_sae()
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1) + 0.5)
    acts = torch.randn(8, 4, 16)
    before = sae.forward_routed(acts)
    sae.fold_W_dec_norm()
    after = sae.forward_routed(acts)
    assert sae.cfg.rescale_acts_by_decoder_norm is False
    torch.testing.assert_close(after.sae_out, before.sae_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after.feature_acts.bool(), before.feature_acts.bool())
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    with torch.no_grad():
        sae.W_dec.mul_(2)
    with pytest.raises(ValueError, match="not unit-norm"):
        sae.fold_W_dec_norm()


@pytest.mark.parametrize("cls", [RouteSAEConfig, RouteTrainingSAEConfig])
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 65}, "k must be <= d_sae"),
        ({"k": 0}, "k must be a positive"),
        ({"hook_names": HOOKS4[:1]}, "hook_names must list at least 2"),
        ({"hook_names": [HOOKS4[0], HOOKS4[0]]}, "hook_names must not repeat"),
        ({"hook_names": [HOOKS4[2], HOOKS4[0]]}, "hook_names must be in layer order"),
        ({"routing": "medium"}, "routing must be one of"),
        ({"router_input": "max"}, "router_input must be one of"),
        ({"normalize_activations": "layer_norm"}, "normalize_activations must be 'none'"),
    ],
)
def test_config_rejects_bad_values(cls, kwargs, field):
    base = {"d_in": 16, "d_sae": 64, "k": 4, "hook_names": HOOKS4}
    with pytest.raises(ValueError, match=field):
        cls(**{**base, **kwargs})


def test_forward_routed_rejects_bad_acts(training_sae):
    with pytest.raises(ValueError, match=r"\[\.\.\., 4, 16\]"):
        training_sae.forward_routed(torch.randn(8, 3, 16))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4, 16\]"):
        training_sae.forward_routed(torch.randn(8, 4, 15))
    bad = torch.randn(8, 4, 16)
    bad[3, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        training_sae.forward_routed(bad)
    bad[3, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        training_sae.training_forward_pass(step_input(bad))


# ---- on SAELens's TopK classes -----------------------------------------------------------------------------
SAVED_BEFORE_TOPK = FIXTURES / "saved_before_topk_reuse"


def test_route_saes_are_sae_lens_topk_saes():
    """Routing sits in front of SAELens's TopK machinery; the registered architecture is still "routesae"."""
    sae, training = make_sae(), make_training_sae()
    assert isinstance(sae, TopKSAE) and isinstance(training, TopKTrainingSAE)
    assert isinstance(sae.cfg, TopKSAEConfig) and isinstance(training.cfg, TopKTrainingSAEConfig)
    assert isinstance(sae.activation_fn, TopK) and isinstance(training.activation_fn, TopK)
    assert sae.cfg.architecture() == training.cfg.architecture() == "routesae"
    assert get_sae_class("routesae") == (RouteSAE, RouteSAEConfig)
    assert get_sae_training_class("routesae") == (RouteTrainingSAE, RouteTrainingSAEConfig)


@pytest.mark.parametrize("variant", ["default", "official", "soft_sparse"])
@pytest.mark.parametrize("folder, cls", [("inference", SAE), ("training", TrainingSAE)])
def test_sae_saved_before_topk_reuse_loads_identically(variant, folder, cls):
    """Folders written by the code before the SAE classes reused SAELens's TopK ones (make_fixture.py there):
    same cfg.json fields, same outputs; the training folders also give the same losses (aux loss included)."""
    path = SAVED_BEFORE_TOPK / variant / folder
    sae = cls.load_from_disk(path)
    assert isinstance(sae, RouteSAE | RouteTrainingSAE)
    saved_cfg = json.loads((path / "cfg.json").read_text())
    # training-only, off by default
    added_since = {"end_to_end_tokens", "end_to_end_lr", "end_to_end_mse_coefficient", "max_grad_norm",
                   "encoder_init_norm", "aux_loss_moves_router"}
    assert set(sae.cfg.to_dict()) - added_since == set(saved_cfg)
    if folder == "inference":  # what save_inference_model writes now (folded decoder norms) is what it wrote
        assert set(make_training_sae().cfg.get_inference_sae_cfg_dict()) == set(saved_cfg)
    want = load_file(SAVED_BEFORE_TOPK / "expected.safetensors")
    acts = want["acts"]
    with torch.no_grad():
        out = sae.forward_routed(acts)
    for key in ("feature_acts", "sae_out", "router_weights"):
        torch.testing.assert_close(getattr(out, key), want[f"{variant}.{key}"], atol=1e-5, rtol=1e-5)
    if f"{variant}.decode_encode" in want:
        torch.testing.assert_close(sae.decode(sae.encode(acts[None]))[0], want[f"{variant}.decode_encode"])
    if folder == "training":
        torch.testing.assert_close(out.hidden_pre, want[f"{variant}.hidden_pre"], atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            losses = sae.training_forward_pass(step_input(acts, dead=want["dead"])).losses
        expected = {k.split(".loss.")[1]: v for k, v in want.items() if k.startswith(f"{variant}.loss.")}
        assert set(losses) == set(expected) == {"normalized_mse_loss", "auxiliary_reconstruction_loss"}
        for name, value in expected.items():
            torch.testing.assert_close(losses[name].reshape(1), value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("moves_router", [False, True])
def test_aux_loss_is_sae_lens_topk_aux_loss_per_token_normalised(moves_router):
    """The value is SAELens's TopK aux loss with each token's squared error divided by ||sae_in||^2 (the
    scale of the normalised MSE), and the SAE's weights, the router's included (through sae_in), get the
    gradients of exactly that; the normaliser is detached from the router unless `aux_loss_moves_router`."""
    sae = make_training_sae(aux_loss_coefficient=0.5, aux_loss_moves_router=moves_router)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1) + 0.5)  # decoder-norm rescaling matters
    acts, dead = torch.randn(32, 4, 16) * 3, torch.arange(64) % 3 == 0
    out = sae.forward_routed(acts)
    aux = sae.calculate_aux_loss(step_input(out.sae_in, dead), out.feature_acts, out.hidden_pre, out.sae_out)
    got = aux["auxiliary_reconstruction_loss"]
    got.backward()
    grads = {n: getattr(sae, n).grad.clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec", "W_router")}
    sae.zero_grad()

    out = sae.forward_routed(acts)
    k_aux = min(16 // 2, int(dead.sum()))
    aux_acts = calculate_topk_aux_acts(k_aux=k_aux, hidden_pre=out.hidden_pre, dead_neuron_mask=dead)
    recons = aux_acts @ (sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True))
    err = (recons - (out.sae_in - out.sae_out).detach()).pow(2).sum(-1)
    norm = (out.sae_in if moves_router else out.sae_in.detach()).pow(2).sum(-1)
    expected = 0.5 * min(int(dead.sum()) / (16 // 2), 1.0) * (err / norm).mean()
    torch.testing.assert_close(got, expected)
    expected.backward()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, getattr(sae, name).grad, msg=name)


# ---- bad input ---------------------------------------------------------------------------------------------
def test_forward_routed_routes_one_token(training_sae):
    acts = torch.randn(5, 4, 16) * 2 + 1
    batch = training_sae.forward_routed(acts)
    one = training_sae.forward_routed(acts[2])  # [L, d_in]
    assert one.sae_out.shape == (16,) and one.feature_acts.shape == (64,) and one.layer_index.shape == ()
    for key in ("router_weights", "layer_index", "sae_in", "feature_acts", "sae_out", "hidden_pre"):
        torch.testing.assert_close(getattr(one, key), getattr(batch, key)[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.routed_layer_reconstruction(), batch.routed_layer_reconstruction()[2])
    sparse = make_training_sae(use_sparse_activations=True)
    torch.testing.assert_close(sparse.forward_routed(acts[2]).sae_out, sparse.forward_routed(acts).sae_out[2])
    # [n, d_in] with n != L is one hook's activations: still refused, naming the routed runner
    one_hook = "acts of shape \\(5, 16\\), one hook.s activations; it needs all L=.*RouteSAETrainingRunner"
    with pytest.raises(ValueError, match=one_hook):
        training_sae.forward_routed(acts[:, 0])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_forward_routed_and_encode_refuse_integer_input(training_sae, dtype):
    acts = torch.randint(0, 3, (5, 4, 16)).to(dtype)
    with pytest.raises(ValueError, match=f"float activations.*got dtype {dtype}"):
        training_sae.forward_routed(acts)
    with pytest.raises(ValueError, match=f"float activations.*got dtype {dtype}"):
        training_sae.encode(acts[None])


@pytest.mark.parametrize("cls", [RouteSAEConfig, RouteTrainingSAEConfig])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": True}, r"k must be a positive integer, got k=True \(bool\)"),
        ({"k": 4.0}, r"k must be a positive integer, got k=4.0 \(float\)"),
        ({"d_sae": "512"}, r"d_sae must be a positive integer, got d_sae='512' \(a string\)"),
        ({"d_in": 16.0}, r"d_in must be a positive integer, got d_in=16.0 \(float\)"),
        ({"d_in": 0}, r"d_in must be a positive integer, got d_in=0"),
        ({"hook_names": "blocks.3.hook_resid_post"}, "hook_names must be a list of hook names, got a string"),
        ({"hook_names": None}, r"hook_names must be a list of hook names, got None \(NoneType\)"),
        ({"standardize_eps": "1e-6"}, r"standardize_eps must be a number > 0, got standardize_eps='1e-6'"),
        ({"standardize_eps": 0.0}, r"standardize_eps must be a number > 0"),
        ({"topk_relu": "false"}, r"topk_relu must be a bool \(True/False\), got topk_relu='false'"),
        ({"standardize": 1}, r"standardize must be a bool"),
        ({"rescale_acts_by_decoder_norm": "yes"}, r"rescale_acts_by_decoder_norm must be a bool"),
    ],
)
def test_config_field_types_are_checked(cls, kwargs, message):
    base = {"d_in": 16, "d_sae": 64, "k": 4, "hook_names": HOOKS4}
    with pytest.raises(ValueError, match=message):
        cls(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"aux_loss_coefficient": "0.1"},
            r"aux_loss_coefficient must be a number >= 0, got .*'0.1' \(a string\)",
        ),
        ({"aux_loss_coefficient": float("nan")}, r"aux_loss_coefficient must be a number >= 0"),
        (
            {"decoder_init_norm": "1"},
            r"decoder_init_norm must be a number > 0 or None, got .*'1' \(a string\)",
        ),
        ({"unit_norm_decoder_every": 2.5}, r"unit_norm_decoder_every must be an integer >= 0 \(0 = never\)"),
        ({"use_sparse_activations": "true"}, r"use_sparse_activations must be a bool"),
    ],
)
def test_training_config_field_types_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RouteTrainingSAEConfig(d_in=16, d_sae=64, k=4, hook_names=HOOKS4, **kwargs)


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: w.zero_(), "W_dec is all zeros: not a trained RouteSAE"),
        (lambda w: w.__setitem__((3, 1), float("inf")), r"W_dec has 1 non-finite value \(NaN/Inf\)"),
        (lambda w: w.__setitem__((0, 0), float("nan")), r"W_dec has 1 non-finite value \(NaN/Inf\)"),
    ],
)
@pytest.mark.parametrize("cls", [SAE, TrainingSAE])
def test_unusable_decoder_is_refused_at_load(tmp_path, cls, rescale, edit, message):
    """SAELens loads such weights; an all-zero decoder then gives NaN (rescaling divides by its zero norms)
    or a constant b_dec. Every SAELens load path runs `process_state_dict_for_loading`, which names W_dec
    instead."""
    sae = make_training_sae(rescale_acts_by_decoder_norm=rescale)
    with torch.no_grad():
        edit(sae.W_dec)
    sae.save_model(tmp_path / "sae")
    with pytest.raises(IntegrityError, match=f"RouteSAE weights: {message}"):
        cls.load_from_disk(tmp_path / "sae")
    state = sae.state_dict()
    with pytest.raises(IntegrityError, match=message):
        sae.process_state_dict_for_loading(state)
