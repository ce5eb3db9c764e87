"""Refusals of single-layer use by SAELens or sae-dashboard tools, each naming the routed equivalents."""

from collections.abc import Sequence

ROUTED_EQUIVALENTS = """
  - HookedSAETransformer.run_with_saes / add_sae / saes() / run_with_hooks_with_saes: use \
sae_lens_routing.analysis.splice.routed_splice(model, sae)
  - HookedSAETransformer.run_with_cache_with_saes: use \
sae.forward_routed(stacked [..., L, d_in]).feature_acts, or the plans of \
routed_splice(model, sae, use_error_term=True) (plans[-1].feature_acts; on_features=... edits them)
  - sae_lens.evals.run_evals (get_recons_loss, get_sparsity_and_variance_metrics), LLMSaeEvaluator: use \
sae_lens_routing.analysis.evals.run_route_evals(sae, model, tokens_or_store)
  - sae-dashboard SaeVisRunner / NeuronpediaRunner: use sae_lens_routing.dashboard.report.routed_dashboard \
(CLI: python -m sae_lens_routing dashboard / neuronpedia)
  - LanguageModelSAETrainingRunner / MultiSAETrainingRunner: use sae_lens_routing.RouteSAETrainingRunner \
(its MultiLayerActivationsStore yields [batch, L, d_in])"""


class SingleLayerInputError(ValueError):
    """A RouteSAE was handed one layer's activations (or asked for its one layer), which it cannot route."""


def single_layer_input_error(method: str, shape: Sequence[int], n: int, d_in: int) -> SingleLayerInputError:
    """The refusal for one layer's activations `[..., d_in]` reaching `method` of a RouteSAE."""
    shape = tuple(shape)
    ambiguous = (
        f" (shape[-2] == L = {n}: if these are the L routed layers stacked as [n, L, d_in], encode does not "
        "guess between that and [batch, seq=L, d_in]; call sae.forward_routed(x), or pass "
        "x.reshape(n, L * d_in) or x[:, None] as [batch, seq, L, d_in])"
        if len(shape) >= 2 and shape[-2] == n
        else ""
    )
    return SingleLayerInputError(
        f"RouteSAE.{method} got one layer's activations, shape {shape} = [..., d_in={d_in}]{ambiguous}. A "
        f"routed SAE picks, per token, one of its L={n} layers (cfg.hook_names), so one layer cannot be "
        "routed, and encoding it unrouted would be silently wrong. Pass the routed layers stacked, "
        f"[batch, seq, L={n}, d_in] or [..., L*d_in={n * d_in}], or use the routed equivalent of the SAELens "
        f"tool:{ROUTED_EQUIVALENTS}"
    )


def no_single_hook_layer_error(hook_names: Sequence[str]) -> SingleLayerInputError:
    """The refusal for a tool asking a routed SAE's config for its one hook layer."""
    return SingleLayerInputError(
        f"a RouteSAE has no single hook layer: it routes each token between {list(hook_names)}. "
        "sae-dashboard's NeuronpediaRunner would build a single-layer (unrouted, wrong) dashboard; use "
        "sae_lens_routing.dashboard.report.routed_dashboard or `python -m sae_lens_routing neuronpedia`. "
        f"Routed equivalents of SAELens's tools:{ROUTED_EQUIVALENTS}"
    )
