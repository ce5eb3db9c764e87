"""SAELens's unchanged `LanguageModelSAETrainingRunner` trains a RouteSAE (stacked routed hook point + the
"routesae_stacked" training config), with the same result as `RouteSAETrainingRunner` on the same
seed/tokens."""

from __future__ import annotations

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset
from sae_lens import SAE, LanguageModelSAETrainingRunner

from sae_lens_routing import RouteSAE, RouteTrainingSAE
from sae_lens_routing.training.runner import RouteSAETrainingRunner
from sae_lens_routing.training.stock_runner import (
    StackedRouteTrainingSAEConfig,
    routed_hook_name,
    routed_model,
    stock_runner_config,
)


def test_stock_runner_equals_route_runner(tmp_path):
    """SAELens's trainer always clips at 1.0 and never projects the decoder: on that subset of the recipe (a
    warning names what the stock runner drops) both runners train the same SAE."""
    subset = {"max_grad_norm": 1.0, "unit_norm_decoder_every": 0}
    cfg = route_runner_cfg(tmp_path, training_tokens=128 * 10, lr=3e-3, output_path=str(tmp_path / "ours"),
                           sae=subset)  # fmt: skip
    ours = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    our_sae = ours.run()

    with pytest.warns(UserWarning, match=r"cannot apply \{'max_grad_norm': None, 'unit_norm_decoder_every'"):
        stock_cfg = stock_runner_config(route_runner_cfg(tmp_path, training_tokens=128 * 10, lr=3e-3))
    assert stock_cfg.hook_name == "blocks.2.hook_resid_routed" and stock_cfg.sae.d_in == 2 * 16
    model = tiny_model()
    with routed_model(model, cfg.sae.hook_names):
        torch.manual_seed(
            cfg.seed
        )  # RouteSAETrainingRunner seeds before building the SAE; the stock one does not
        runner = LanguageModelSAETrainingRunner(
            stock_cfg, override_dataset=token_dataset(64), override_model=model
        )
        assert type(runner.sae).__name__ == "StackedRouteTrainingSAE" and runner.sae.cfg.d_in == 16
        torch.manual_seed(cfg.seed)  # ours seeds the data order with `seed` before training
        stock_sae = runner.run()
    assert "blocks.2.hook_resid_routed" not in model.hook_dict  # the model is restored
    assert isinstance(stock_sae, RouteTrainingSAE)
    for name, param in our_sae.state_dict().items():
        torch.testing.assert_close(stock_sae.state_dict()[name], param, atol=1e-6, rtol=1e-5, msg=name)

    saved = SAE.load_from_disk(stock_cfg.output_path)  # an ordinary RouteSAE folder
    assert isinstance(saved, RouteSAE) and saved.cfg.architecture() == "routesae"
    assert saved.cfg.d_in == 16 and saved.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    acts = torch.randn(8, 2, 16)
    torch.testing.assert_close(
        saved.forward_routed(acts).sae_out, SAE.load_from_disk(tmp_path / "ours").forward_routed(acts).sae_out
    )


def test_stacked_config_checks():
    with pytest.raises(ValueError, match="multiple of 2"):
        StackedRouteTrainingSAEConfig(d_in=33, d_sae=32, k=4, hook_names=["blocks.0.x", "blocks.1.x"])
    with pytest.raises(ValueError, match="inside transformer blocks"):
        routed_hook_name(["hook_embed", "blocks.1.hook_resid_post"])
    with pytest.raises(ValueError, match="RouteTrainingSAEConfig"):
        stock_runner_config(object())


def test_multi_sae_runner_trains_a_routesae(tmp_path):
    """SAELens's MultiSAETrainingRunner: one routed SAE beside a single-layer TopK, one shared forward."""
    from sae_lens.config import LoggingConfig
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner, MultiSAETrainingRunnerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    hooks = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    route = route_runner_cfg(tmp_path).sae
    multi_cfg = MultiSAETrainingRunnerConfig(
        saes={
            "route": StackedRouteTrainingSAEConfig.from_route_config(route),
            "topk": TopKTrainingSAEConfig(16, 32, k=4),
        },
        hook_names={"route": routed_hook_name(hooks), "topk": hooks[-1]},
        model_name="tiny",
        context_size=16,
        streaming=False,
        training_tokens=128 * 6,
        train_batch_size_tokens=128,
        store_batch_size_prompts=4,
        n_batches_in_buffer=16,
        exclude_special_tokens=[0],
        output_path=str(tmp_path / "multi"),
        checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False),
    )
    model = tiny_model()
    with routed_model(model, hooks):
        saes = MultiSAETrainingRunner(
            multi_cfg, override_dataset=token_dataset(64), override_model=model
        ).run()
    assert isinstance(saes["route"], RouteTrainingSAE)
    loaded = [p.parent for p in (tmp_path / "multi").rglob("cfg.json")]
    routed = [SAE.load_from_disk(p) for p in loaded if "route" in str(p)]
    assert routed and isinstance(routed[0], RouteSAE) and routed[0].cfg.d_in == 16
