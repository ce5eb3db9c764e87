"""SAELens's and sae-dashboard's own tools handed a RouteSAE: the routed result or a refusal that names the
routed equivalent, before wrong numbers come out (README, "Using SAELens's own tools on a routed SAE")."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model, token_dataset

from sae_lens_routing import RouteSAE, RouteSAEConfig, RouteTrainingSAE, RouteTrainingSAEConfig
from sae_lens_routing.analysis.evals import run_route_evals
from sae_lens_routing.saes.routed_metrics import routing_shares
from sae_lens_routing.saes.sae_lens_guards import SingleLayerInputError

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
LAST = HOOKS[-1]


def with_metadata(sae):
    """What a saved RouteSAE carries: the last routed hook as SAELens's one hook name."""
    sae.cfg.metadata.hook_name = LAST
    sae.cfg.metadata.model_name = "tiny"
    sae.cfg.metadata.context_size = 16
    sae.cfg.metadata.prepend_bos = True
    return sae


def route_sae() -> RouteSAE:
    torch.manual_seed(0)
    sae = RouteSAE(
        RouteSAEConfig(d_in=16, d_sae=48, k=6, hook_names=HOOKS, rescale_acts_by_decoder_norm=True)
    )
    with torch.no_grad():
        sae.W_router.mul_(20)
    return with_metadata(sae)


def hooked_sae_transformer():
    from sae_lens import HookedSAETransformer

    model = HookedSAETransformer(tiny_model().cfg)
    model.load_state_dict(tiny_model().state_dict(), strict=False)
    return model.eval()


def tokens(n: int = 2, seq: int = 16) -> torch.Tensor:
    t = torch.randint(1, 50, (n, seq), generator=torch.Generator().manual_seed(0))
    t[:, 0] = 0
    return t


def _run_with_saes(model, sae, toks):
    return model.run_with_saes(toks, saes=[sae])


def _add_sae(model, sae, toks):
    model.add_sae(sae)
    try:
        return model(toks)
    finally:
        model.reset_saes()


def _saes_context(model, sae, toks):
    with model.saes(saes=[sae]):
        return model(toks)


def _run_with_hooks_with_saes(model, sae, toks):
    return model.run_with_hooks_with_saes(toks, saes=[sae])


def _run_with_cache_with_saes(model, sae, toks):
    return model.run_with_cache_with_saes(toks, saes=[sae], use_error_term=True)


@pytest.mark.parametrize(
    ("entry", "routed"),
    [
        (_run_with_saes, "routed_splice"),
        (_add_sae, "routed_splice"),
        (_saes_context, "routed_splice"),
        (_run_with_hooks_with_saes, "routed_splice"),
        (_run_with_cache_with_saes, r"forward_routed.*routed_splice\(model, sae, use_error_term=True\)"),
    ],
)
def test_hooked_sae_transformer_refuses_before_any_output(entry, routed):
    """A routed splice in one forward is impossible (a token's routing needs later layers than some it
    replaces), so the SAE refuses the one layer the wrapper hands it, before the model computes anything
    past that hook."""
    model, sae = hooked_sae_transformer(), route_sae()
    clean = model(tokens())
    after_last_hook = []
    model.hook_dict["ln_final.hook_normalized"].add_hook(lambda act, hook: after_last_hook.append(1))
    with pytest.raises(SingleLayerInputError, match=f"(?s)one layer's activations.*{routed}"):
        entry(model, sae, tokens())
    assert after_last_hook == []  # no logits (right or wrong) were computed
    model.reset_hooks()
    assert model.acts_to_saes == {}  # nothing left attached
    torch.testing.assert_close(model(tokens()), clean)


@pytest.fixture(scope="module")
def store():
    from sae_lens.training.activations_store import ActivationsStore

    return ActivationsStore.from_sae(
        tiny_model(),
        route_sae(),
        dataset=token_dataset(n_rows=32, context=16),
        context_size=16,
        streaming=False,
        store_batch_size_prompts=2,
        n_batches_in_buffer=2,
        train_batch_size_tokens=16,
        total_tokens=10_000,
    )


def test_activations_store_from_sae_tokens_work_its_activations_are_refused(store):
    """Works as-is for what it can give a routed SAE (token batches, e.g. for run_route_evals); the
    activations it reads at metadata.hook_name are one layer's, which the SAE refuses."""
    model, sae = tiny_model(), route_sae()
    m = run_route_evals(sae, model, store, n_batches=1, batch_size=2)
    assert m["metrics/total_tokens_evaluated"] == 2 * 16
    assert abs(sum(routing_shares(m).values()) - 1) < 1e-9
    acts = store.get_activations(store.get_batch_tokens(2))  # [batch, seq, 1 hook, d_in]
    with pytest.raises(SingleLayerInputError, match="MultiLayerActivationsStore"):
        sae.encode(acts)
    with pytest.raises(SingleLayerInputError, match="RouteSAETrainingRunner"):
        sae(acts[:, :, 0])


@pytest.mark.parametrize(
    "metrics",
    [
        {"compute_ce_loss": True, "compute_kl": True},  # get_recons_loss: a single-hook splice
        {"compute_variance_metrics": True, "compute_sparsity_metrics": True, "compute_l2_norms": True},
    ],
)
def test_run_evals_refuses_naming_run_route_evals(store, metrics):
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    cfg = EvalConfig(n_eval_reconstruction_batches=1, n_eval_sparsity_variance_batches=1, **metrics)
    with pytest.raises(SingleLayerInputError, match=r"run_route_evals\(sae, model, tokens_or_store\)"):
        run_evals(route_sae(), store, tiny_model(), ActivationScaler(), cfg, exclude_special_tokens=[0])


def test_featurewise_weight_based_metrics_work_as_is():
    """Pure weight statistics (encoder/decoder norms and cosines) mean the same for the shared routed SAE."""
    from sae_lens.evals import get_featurewise_weight_based_metrics

    sae = route_sae()
    m = get_featurewise_weight_based_metrics(sae)
    torch.testing.assert_close(torch.tensor(m["encoder_norm"]), sae.W_enc.norm(dim=0).detach())


def test_llm_sae_evaluator_refuses_naming_run_route_evals(store):
    from sae_lens.llm_sae_training_runner import LLMSaeEvaluator
    from sae_lens.training.activation_scaler import ActivationScaler

    torch.manual_seed(0)
    sae = RouteTrainingSAE(RouteTrainingSAEConfig(d_in=16, d_sae=48, k=6, hook_names=HOOKS))
    with_metadata(sae)
    evaluator = LLMSaeEvaluator(
        model=tiny_model(),
        activations_store=store,
        eval_batch_size_prompts=2,
        n_eval_batches=1,
        model_kwargs={},
    )
    with pytest.raises(SingleLayerInputError, match="run_route_evals"):
        evaluator(sae, iter([]), ActivationScaler())


def test_sae_vis_runner_at_the_sae_hook_refuses_naming_routed_dashboard():
    """sae-dashboard at metadata.hook_name would show a plausible last-layer dashboard; routed_dashboard
    (the same runner at the routed pseudo hook) is tested in test_dashboard.py."""
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    cfg = SaeVisConfig(
        hook_point=LAST, features=[0, 1], minibatch_size_tokens=2, minibatch_size_features=2, verbose=False
    )
    with pytest.raises(SingleLayerInputError, match="routed_dashboard"):
        SaeVisRunner(cfg).run(encoder=route_sae(), model=tiny_model(), tokens=tokens(4, 16))


def test_neuronpedia_runner_refuses_before_loading_the_model(tmp_path):
    """NeuronpediaRunner asks the config for its one hook layer before it loads the model ("tiny" is no
    model it could load, so reaching that step would fail differently)."""
    from sae_dashboard.neuronpedia.neuronpedia_runner import NeuronpediaRunner
    from sae_dashboard.neuronpedia.neuronpedia_runner_config import NeuronpediaRunnerConfig

    route_sae().save_model(tmp_path / "sae")
    cfg = NeuronpediaRunnerConfig(
        sae_set="routed",
        sae_path=str(tmp_path / "sae"),
        from_local_sae=True,
        outputs_dir=str(tmp_path / "np"),
        huggingface_dataset_path="local",
        sae_device="cpu",
        model_device="cpu",
        activation_store_device="cpu",
    )
    with pytest.raises(SingleLayerInputError, match="(?s)no single hook layer.*sae_lens_routing neuronpedia"):
        NeuronpediaRunner(cfg)


def test_multi_sae_runner_refuses_at_its_first_step_naming_route_runner(tmp_path):
    """The multi-SAE runner feeds each SAE one hook; SAELens offers no hook to refuse earlier (see README)."""
    from sae_lens.config import LoggingConfig
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner, MultiSAETrainingRunnerConfig

    cfg = MultiSAETrainingRunnerConfig(
        saes={"routed": RouteTrainingSAEConfig(d_in=16, d_sae=48, k=6, hook_names=HOOKS)},
        hook_names=LAST,
        model_name="tiny",
        streaming=False,
        context_size=16,
        n_batches_in_buffer=2,
        training_tokens=256,
        store_batch_size_prompts=2,
        train_batch_size_tokens=16,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=str(tmp_path / "out"),
        n_eval_batches=1,
    )
    runner = MultiSAETrainingRunner(cfg, override_dataset=token_dataset(32, 16), override_model=tiny_model())
    with pytest.raises(ValueError, match="RouteSAETrainingRunner"):
        runner.run()
    assert not (tmp_path / "out").exists()
