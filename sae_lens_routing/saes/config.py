"""RouteSAE configs: SAELens's TopK configs plus routing fields, checked once; the check of saved weights."""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAEConfig
from sae_lens.util import extract_layer_from_tlens_hook_name as hook_layer

from sae_lens_routing.saes.sae_lens_guards import no_single_hook_layer_error

ARCHITECTURE = "routesae"
ROUTING_MODES = ("hard", "soft")
ROUTER_INPUTS = ("sum", "mean")


class IntegrityError(ValueError):
    """A saved SAE is missing a file, is truncated or corrupted, or does not match its config."""


def refuse(problems: Iterable[str | None | bool], error: type[Exception] = ValueError) -> None:
    """Raise `error` with the first problem (falsy entries are none); a lazy iterable stops there."""
    problem = next(filter(None, problems), None)
    if problem:
        raise error(problem)


def _describe(value: Any) -> str:
    return f"{value!r} ({'a string' if isinstance(value, str) else type(value).__name__})"


def _int(low: int) -> Callable[[Any], bool]:  # bool is refused: `k=True` would silently mean k=1
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _num(strict: bool = False, none_ok: bool = False) -> Callable[[Any], bool]:  # NaN fails both comparisons
    real = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    return lambda v: (v is None and none_ok) or (real(v) and (v > 0 if strict else v >= 0))


_BOOL = (lambda v: isinstance(v, bool), "a bool (True/False)")
_NONE = (lambda v: v == "none", "'none' for RouteSAE")
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("d_in", "d_sae", "k"), (_int(1), "a positive integer")),
    "routing": (lambda v: v in ROUTING_MODES, f"one of {ROUTING_MODES}"),
    "router_input": (lambda v: v in ROUTER_INPUTS, f"one of {ROUTER_INPUTS}"),
    "standardize_eps": (_num(strict=True), "a number > 0"),
    **dict.fromkeys(("standardize", "topk_relu", "rescale_acts_by_decoder_norm"), _BOOL),
    "apply_b_dec_to_input": _BOOL,
    "normalize_activations": _NONE,
    "reshape_activations": _NONE,
}
_TRAINING_FIELDS = {
    "dead_feature_window_tokens": (lambda v: v is None or _int(1)(v), "a positive integer or None"),
    "unit_norm_decoder_every": (_int(0), "an integer >= 0 (0 = never)"),
    "aux_loss_coefficient": (_num(), "a number >= 0"),
    "decoder_init_norm": (_num(strict=True, none_ok=True), "a number > 0 or None"),
    **dict.fromkeys(("use_sparse_activations", "aux_loss_moves_router"), _BOOL),
    "end_to_end_tokens": (lambda v: v is None or _int(0)(v), "an integer >= 0 (0: none) or None (default)"),
    "end_to_end_lr": (_num(strict=True), "a number > 0"),
    "end_to_end_mse_coefficient": (_num(), "a number >= 0"),
    "encoder_init_norm": (_num(strict=True, none_ok=True), "a number > 0 or None"),
    "max_grad_norm": (_num(strict=True, none_ok=True), "a number > 0 or None (no clipping)"),
}


def paper_hook_names(n_layers: int, hook: str = "hook_resid_post") -> list[str]:
    """The paper's routed layers, blocks n//4-1 .. 3n//4-1 (Hugging Face `hidden_states[n//4 : 3n//4+1]`)."""
    if not isinstance(n_layers, int) or n_layers < 4:
        raise ValueError(f"n_layers must be an integer >= 4 (its middle layers are routed), got {n_layers!r}")
    return [f"blocks.{i}.{hook}" for i in range(n_layers // 4 - 1, 3 * n_layers // 4)]


def paper_layers(model: Any, hook: str = "hook_resid_post") -> list[str]:
    """`paper_hook_names` for a HookedTransformer."""
    return paper_hook_names(int(model.cfg.n_layers), hook)


def _hook_names_problem(hooks: Any) -> str | None:
    if isinstance(hooks, str) or not isinstance(hooks, list | tuple):
        got = f"a string {hooks!r}" if isinstance(hooks, str) else _describe(hooks)
        return f"hook_names must be a list of hook names, got {got}"
    layers = [hook_layer(str(h)) for h in hooks]
    if len(hooks) < 2:
        return f"hook_names must list at least 2 routed hook points, got {list(hooks)!r}"
    if len(set(hooks)) < len(hooks):
        return f"hook_names must not repeat a hook point, got {list(hooks)!r}"
    if None not in layers and layers != sorted(layers):  # type: ignore[type-var]
        return f"hook_names must be in layer order (earliest first), got {list(hooks)!r}"
    return None


class CheckedState(dict):  # type: ignore[type-arg]
    """Weights a plugin loader checked against their file: the model does not scan them again."""


def check_route_state_dict(
    state: Mapping[str, torch.Tensor], d_in: int, d_sae: int, n_layers: int, source: str = "RouteSAE weights"
) -> None:
    """Keys, shapes and values, once per load: SAELens loads NaN or an all-zero decoder silently."""
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
                "W_router": (d_in, n_layers)}  # fmt: skip
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [(k, tuple(state[k].shape), s) for k, s in expected.items() if k in state and state[k].shape != s]
    problem = None
    if missing or extra:
        problem = f"RouteSAE weights must be {sorted(expected)}; missing {missing}, unexpected {extra}"
    elif wrong:
        problem = "{} has shape {}, but the config expects {}".format(*wrong[0])
        problem += f" (d_in={d_in}, d_sae={d_sae}, L=len(hook_names)={n_layers})"
    elif bad := {k: n for k, v in state.items() if (n := int((~torch.isfinite(v)).sum()))}:
        k, n = next(iter(bad.items()))
        problem = f"{k} has {n} non-finite value{'s' if n > 1 else ''} (NaN/Inf)"
    elif not bool(state["W_dec"].any()):
        problem = "W_dec is all zeros: not a trained RouteSAE"
    refuse([problem and f"{source}: {problem}"], IntegrityError)


@dataclass
class _RoutedConfig:
    """The routing fields and answers both routed configs share (mixed in before SAELens's TopK config)."""

    k: int = 64
    hook_names: list[str] = field(default_factory=list)  # routed hook points in layer order, L >= 2
    routing: Literal["hard", "soft"] = "hard"  # one layer per token times its router weight, or the mix
    router_input: Literal["sum", "mean"] = "sum"  # how the L standardised layers are pooled for the router
    standardize: bool = True  # (h - mean) / (std + eps) per layer and token, as the paper does
    standardize_eps: float = 1e-6
    topk_relu: bool = True  # ReLU the kept TopK values (SAELens does; the official RouteSAE does not)

    def __post_init__(self) -> None:
        """The one meaning check of a routed config; the message names the field and what it expects."""
        super().__post_init__()  # type: ignore[misc]
        fields = {**_FIELDS, **(_TRAINING_FIELDS if isinstance(self, TopKTrainingSAEConfig) else {})}
        problems = [
            f"{name} must be {expected}, got {name}={_describe(getattr(self, name))}"
            for name, (ok, expected) in fields.items()
            if not ok(getattr(self, name))
        ]
        problem = (problems or [_hook_names_problem(self.hook_names)])[0]
        k, d_sae = self.k, self.d_sae
        refuse([problem or k > d_sae and f"k must be <= d_sae, got k={k} > d_sae={d_sae}"])
        self.hook_names = list(self.hook_names)

    @property
    def hook_layer(self) -> int:
        """Refused: sae-dashboard's NeuronpediaRunner asks for one to build a single-layer dashboard."""
        raise no_single_hook_layer_error(self.hook_names)

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


@dataclass
class RouteSAEConfig(_RoutedConfig, TopKSAEConfig):
    """Inference config of a routed SAE (architecture ``"routesae"``)."""


@dataclass
class RouteTrainingSAEConfig(_RoutedConfig, TopKTrainingSAEConfig):
    """Training config of a routed SAE: the official training rules plus a short end-to-end KL phase."""

    topk_relu: bool = False  # the official TopK keeps the k largest pre-activations as they are
    decoder_init_norm: float | None = 1.0  # unit-norm decoder rows, the encoder's directions
    encoder_init_norm: float | None = 3**-0.5  # the official nn.Linear's scale; None: W_enc = W_dec.T
    max_grad_norm: float | None = None  # SAELens always clips at 1.0; the official loop never does
    aux_loss_coefficient: float = 0.0  # SAELens's TopK dead-latent loss
    aux_loss_moves_router: bool = False  # its normaliser in the graph: the router collapses
    dead_feature_window_tokens: int | None = 80_000  # silent tokens before dead; None: `dead_feature_window`
    unit_norm_decoder_every: int = 10  # project decoder rows to unit norm every N steps (the official 10)
    use_sparse_activations: bool = False  # decode the k active latents with a gather, not a dense matmul
    end_to_end_tokens: int | None = None  # final phase on the spliced model's KL; None: 20k live, 0 cached
    end_to_end_lr: float = 1e-4
    end_to_end_mse_coefficient: float = 1.0

    def end_to_end_tokens_for(self, cached: bool) -> int:
        """The end-to-end phase's tokens; a cached run has no model to splice, so its default is none."""
        if self.end_to_end_tokens is not None:
            return self.end_to_end_tokens
        return 0 if cached else 20_000
