"""`RouteSAE` (inference) and `RouteTrainingSAE` (training): one shared TopK SAE behind a layer router.

Spaces. Everything the SAE computes lives in the *standardised* space (each layer's activation of each
token scaled to mean 0, std 1, as the paper does). `forward_routed` takes raw activations of the L routed
hooks and returns the routed input and its reconstruction in that space. SAELens's methods keep SAELens's
contract on the routed input: `encode` takes the L layers stacked, [batch, seq, L, d_in] or [..., L*d_in]
(how sae-dashboard hands them over), and equals `forward_routed(...).feature_acts`; `decode(encode(x))` is in
the input's (raw) space, with the per-token stats of the `encode` call that returned the features; `forward` is
`decode(encode(x))`; `decode_standardized` stays in the standardised space. One layer's activations
[..., d_in], which is what SAELens's single-hook tools pass, are refused with the routed equivalent
(`sae_lens_guards`): a single layer cannot be routed.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput, _disable_hooks
from sae_lens.saes.topk_sae import TopKSAE, TopKTrainingSAE, act_times_W_dec, calculate_topk_aux_acts
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary
from typing_extensions import override

from sae_lens_routing.saes.config import RouteSAEConfig, RouteTrainingSAEConfig
from sae_lens_routing.saes.router import (
    Routing,
    Standardized,
    route,
    router_input,
    routing_entropy_bits,
    standardize,
)
from sae_lens_routing.saes.sae_lens_guards import single_layer_input_error
from sae_lens_routing.saes.state_dict import check_route_state_dict
from sae_lens_routing.saes.topk import RoutedTopK


@dataclass
class RoutedOutput:
    """Everything one routed forward pass computes, per token."""

    router_weights: torch.Tensor  # [..., L] softmax of the router logits
    layer_weights: torch.Tensor  # [..., L] one-hot of the argmax (hard) or the softmax (soft)
    layer_index: torch.Tensor  # [...] argmax layer (index into hook_names)
    sae_in: torch.Tensor  # [..., d_in] routed input, standardised space
    feature_acts: torch.Tensor  # [..., d_sae]
    sae_out: torch.Tensor  # [..., d_in] reconstruction of sae_in, same space
    hidden_pre: torch.Tensor  # [..., d_sae] pre-TopK activations
    standardized: Standardized  # the L standardised layers and their per-token stats

    def routed_layer_reconstruction(self) -> torch.Tensor:
        """Hard routing: the raw-space reconstruction of each token's routed layer activation.

        The SAE was trained on `x[layer] * router_weight`, so its output is divided by that weight before
        undoing the standardisation. (The official splice instead encodes `x[layer]` unscaled, an input
        distribution the SAE never saw in training.)
        """
        max_weight = self.router_weights.gather(-1, self.layer_index[..., None])
        return self.standardized.undo(self.sae_out / max_weight, self.layer_index)

    def routed_layer_input(self) -> torch.Tensor:
        """Raw activation at each token's routed layer (what a splice replaces)."""
        idx = self.layer_index[..., None, None].expand(*self.layer_index.shape, 1, self.sae_in.shape[-1])
        return self.standardized.undo(self.standardized.x.gather(-2, idx).squeeze(-2), self.layer_index)


@dataclass
class DecodeStats:
    """What `decode` needs from the `encode` call that made a feature tensor: per token, the routed layer's mean
    and std and the router weight the SAE input was scaled by. None for soft routing, whose input mixes layers
    and so has no raw space."""

    batch_shape: tuple[int, ...]
    dtype: torch.dtype
    std: torch.Tensor | None  # [..., 1]
    mean: torch.Tensor | None  # [..., 1]
    weight: torch.Tensor | None  # [..., 1]

    @classmethod
    def of(cls, std: Standardized, routing: Routing, mode: str, dtype: torch.dtype) -> DecodeStats:
        shape = tuple(routing.layer_index.shape)
        if mode != "hard":
            return cls(shape, dtype, None, None, None)
        idx = routing.layer_index[..., None, None]
        return cls(
            shape,
            dtype,
            std.std.gather(-2, idx).squeeze(-2),
            std.mean.gather(-2, idx).squeeze(-2),
            routing.router_weights.gather(-1, routing.layer_index[..., None]),
        )

    def check_hard(self) -> None:
        if self.std is None:
            raise ValueError(
                "RouteSAE.decode: a soft-routed SAE reconstructs a router-weighted mix of the L standardised "
                "layers, which is no layer's raw space; use decode_standardized(feature_acts)"
            )

    def to_raw(self, standardized: torch.Tensor) -> torch.Tensor:
        """`RoutedOutput.routed_layer_reconstruction` for a standardised reconstruction."""
        self.check_hard()
        assert self.std is not None and self.mean is not None and self.weight is not None
        return (standardized / self.weight * self.std + self.mean).to(self.dtype)


_ENCODED: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""Features returned by `encode` -> (weak ref to the SAE, `DecodeStats`); an entry dies with its features."""
_ENCODED_LOCK = threading.Lock()


class _RoutedSAEMixin:
    """What routing changes in SAELens's TopK SAE, in front of its machinery (mixed in before `TopKSAE` /
    `TopKTrainingSAE`): the router and standardisation before the TopK encode, and SAELens's single-layer API on
    stacked routed input. Encoding, decoding, weight init and folding the decoder norms on save are SAELens's."""

    cfg: RouteSAEConfig | RouteTrainingSAEConfig
    W_dec: nn.Parameter
    W_router: nn.Parameter
    activation_fn: RoutedTopK
    dtype: torch.dtype
    device: torch.device

    @property
    def n_layers(self) -> int:
        return len(self.cfg.hook_names)

    def initialize_weights(self) -> None:
        super().initialize_weights()  # type: ignore[misc]  # SAELens's TopK init (b_enc = 0, decoder_init_norm)
        # nn.Linear's default init, as the official router (a bias-free nn.Linear) gets.
        bound = 1.0 / math.sqrt(self.cfg.d_in)
        w = torch.empty(self.cfg.d_in, self.n_layers, dtype=self.dtype, device=self.device)
        if w.device.type != "meta":
            nn.init.uniform_(w, -bound, bound)
        self.W_router = nn.Parameter(w)

    def get_activation_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return RoutedTopK(self.cfg.k, relu=self.cfg.topk_relu)

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        """SAELens calls this before `load_state_dict` on every load path (load_from_disk, from_pretrained,
        checkpoints): check keys, shapes and the decoder against the config first, so a mismatch names the field."""
        check_route_state_dict(
            state_dict,
            d_in=self.cfg.d_in,
            d_sae=self.cfg.d_sae,
            n_layers=self.n_layers,
            source="RouteSAE weights",
        )
        super().process_state_dict_for_loading(state_dict)  # type: ignore[misc]

    # ---- input checks ------------------------------------------------------------------------
    def check_routed_acts(self, acts: torch.Tensor, check_finite: bool = True) -> None:
        """Raise a clear ValueError unless acts is a finite float [..., L, d_in] tensor."""
        want = (self.n_layers, self.cfg.d_in)
        if not isinstance(acts, torch.Tensor):
            raise ValueError(f"acts must be a torch.Tensor of shape [..., L={want[0]}, d_in={want[1]}]")
        if not acts.is_floating_point():
            raise ValueError(
                f"acts must be float activations (RouteSAE standardises them per token), got dtype {acts.dtype}"
            )
        if acts.ndim == 2 and acts.shape[-1] == want[1] and acts.shape[0] != want[0]:
            raise ValueError(
                f"RouteSAE got acts of shape {tuple(acts.shape)}, one d_in-vector per token (one hook's "
                f"activations); it needs all L={want[0]} routed layers per token, [..., L={want[0]}, "
                f"d_in={want[1]}]. Train it with sae_lens_routing.RouteSAETrainingRunner "
                "(not SAELens's LanguageModelSAETrainingRunner, whose store reads one hook)."
            )
        if acts.ndim < 2 or tuple(acts.shape[-2:]) != want:
            raise ValueError(
                f"acts must have shape [..., L, d_in] = [..., {want[0]}, {want[1]}] "
                f"(L = len(cfg.hook_names), d_in = cfg.d_in), got {tuple(acts.shape)}"
            )
        if check_finite and not bool(torch.isfinite(acts).all()):
            raise ValueError("acts contain NaN or Inf values; RouteSAE needs finite activations")

    # ---- routed path -------------------------------------------------------------------------
    def route_acts(self, acts: torch.Tensor) -> tuple[Standardized, Routing]:
        """Standardise raw [..., L, d_in] activations and route each token."""
        std = standardize(acts, self.cfg.standardize_eps, self.cfg.standardize)
        x = std.x.to(self.dtype)
        std.x = x
        logits = router_input(x, self.cfg.router_input) @ self.W_router
        return std, route(x, logits, self.cfg.routing)

    def forward_routed(self, acts: torch.Tensor, check_inputs: bool = True) -> RoutedOutput:
        """Route raw activations of the L hooks, [..., L, d_in] (one token: [L, d_in]), then encode and decode
        the routed input. Shapes and dtype are always checked; finiteness (a device sync) unless check_inputs
        is False."""
        self.check_routed_acts(acts, check_finite=check_inputs)
        std, routing = self.route_acts(acts)
        feature_acts, hidden_pre, sae_out = self._encode_decode_standardized(routing.sae_in)
        return RoutedOutput(
            router_weights=routing.router_weights,
            layer_weights=routing.layer_weights,
            layer_index=routing.layer_index,
            sae_in=routing.sae_in,
            feature_acts=feature_acts,
            sae_out=sae_out,
            hidden_pre=hidden_pre,
            standardized=std,
        )

    def _encode_standardized(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAELens's TopK encode (process_sae_in, W_enc, decoder-norm rescaling, TopK, hooks) of an input already
        in the standardised space, with the pre-activations. Only SAELens's training class returns those, but the
        method uses nothing training-only, so the inference class calls it too rather than a copy of it."""
        return TopKTrainingSAE.encode_with_hidden_pre(self, z)  # type: ignore[arg-type]

    def _encode_decode_standardized(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feature_acts, hidden_pre, sae_out; the sparse option decodes only the k kept latents."""
        feature_acts, hidden_pre = self._encode_standardized(z)
        if not getattr(self.cfg, "use_sparse_activations", False):
            return feature_acts, hidden_pre, self.decode_standardized(feature_acts)
        values, indices = self.activation_fn.topk(hidden_pre)
        if self.cfg.rescale_acts_by_decoder_norm:
            values = values / self.W_dec.norm(dim=-1)[indices]
        flat_idx, flat_val = indices.reshape(-1, indices.shape[-1]), values.reshape(-1, values.shape[-1])
        decoded = nn.functional.embedding_bag(flat_idx, self.W_dec, per_sample_weights=flat_val, mode="sum")
        sae_out = decoded.reshape(*z.shape[:-1], self.cfg.d_in) + self.b_dec
        return feature_acts, hidden_pre, self.hook_sae_recons(sae_out)  # type: ignore[attr-defined]

    # ---- SAELens single-layer API --------------------------------------------------------------
    def routed_acts_view(self, x: torch.Tensor, method: str = "encode") -> torch.Tensor:
        """`x` as raw routed activations [..., L, d_in], when its shape says so unambiguously.

        Routed: [..., L*d_in] (what sae-dashboard hands over from `blocks.N.hook_resid_routed`) and 4-D or more
        [..., L, d_in] (the natural [batch, seq, L, d_in]). Refused: anything else ending in d_in, i.e. one
        layer's activations (what SAELens's single-hook tools pass), including the 3-D [n, L, d_in], which
        cannot be told apart from [batch, seq=L, d_in]; `forward_routed` takes that shape explicitly.
        """
        n, d = self.n_layers, self.cfg.d_in
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{method} expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim >= 1 and x.shape[-1] == n * d:
            return x.reshape(*x.shape[:-1], n, d)
        if x.ndim >= 4 and tuple(x.shape[-2:]) == (n, d):
            return x
        if x.ndim >= 1 and x.shape[-1] == d:
            raise single_layer_input_error(method, x.shape, n, d)
        raise ValueError(
            f"{method} expects the routed layers stacked, [batch, seq, L={n}, d_in={d}] or [..., L*d_in={n * d}], "
            f"got shape {tuple(x.shape)}"
        )

    def _encode_routed(self, x: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature_acts, hidden_pre) of stacked raw input; the features carry their tokens' stats for `decode`."""
        acts = self.routed_acts_view(x, method)
        self.check_routed_acts(acts)
        std, routing = self.route_acts(acts)
        feature_acts, hidden_pre = self._encode_standardized(routing.sae_in)
        stats = DecodeStats.of(std, routing, self.cfg.routing, x.dtype)
        with _ENCODED_LOCK:
            _ENCODED[feature_acts] = (weakref.ref(self), stats)
        return feature_acts, hidden_pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Routed features of the L routed layers stacked, [batch, seq, L, d_in] or [..., L*d_in]; equal to
        `forward_routed(...).feature_acts`. One layer's activations [..., d_in] are refused (see
        `routed_acts_view`): SAELens's single-hook tools pass those, and they cannot be routed.

        `decode` needs each token's routed-layer mean, std and router weight to go back to the raw space; they
        are kept in a table keyed weakly by the identity of the returned tensor. Why not on the module (as
        SAELens's layer_norm SAEs keep `ln_mu`): one module slot is shared by every caller, so a second encode
        (another batch, another thread) silently gives the first batch's features the wrong stats. Keyed by the
        features, they live exactly as long as those features and keep their autograd graph. Simpler carriers
        fail: an attribute on the tensor is pickled by `torch.save(features)` (with the SAE), and a tensor
        subclass would change every op sae-dashboard runs on the features."""
        return self._encode_routed(x, "encode")[0]

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """Back to the input's space: the raw activation of each token's routed layer, [..., d_in].

        Uses the per-token stats of the `encode` call that returned `feature_acts` (edited in place is fine):
        `std * decode_standardized(f) / router_weight + mean`, the reconstruction `routed_splice` writes into
        the residual stream. Features not returned by this SAE's `encode` (a steering vector, a copy or slice,
        `forward_routed`'s features) have no such stats and are refused: use `decode_standardized`."""
        with _ENCODED_LOCK:
            found = _ENCODED.get(feature_acts) if isinstance(feature_acts, torch.Tensor) else None
        owner_ref, stats = found or (None, None)
        owner = owner_ref() if owner_ref is not None else None
        if owner is not self or stats is None or tuple(feature_acts.shape[:-1]) != stats.batch_shape:
            got = "a tensor not returned by this SAE's encode" if owner is not self else "a reshaped tensor"
            raise ValueError(
                "RouteSAE.decode maps features back to raw activations with the per-token mean, std and router "
                f"weight of the encode call that returned them; got {got} of shape {tuple(feature_acts.shape)} "
                "(a copy, slice, product or another batch's features carry no such stats). Decode the tensor "
                "encode returned (in-place edits are fine), or use decode_standardized(feature_acts) for the "
                "reconstruction in the standardised space."
            )
        stats.check_hard()
        return stats.to_raw(self.decode_standardized(feature_acts))

    def decode_standardized(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the standardised space the SAE computes in (that of `forward_routed(...).sae_in`):
        SAELens's TopK decode (`act_times_W_dec` with decoder-norm rescaling, b_dec, hook_sae_recons)."""
        return super().decode(feature_acts)  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked raw routed layers in, raw reconstruction of each token's routed layer out: `decode(encode(x))`.

        With `use_error_term` the output equals that layer's raw input; the error is computed without hooks, as
        SAELens's `SAE.forward` does, so features edited by a hook act as a pure intervention."""
        sae_out = self.decode(self.encode(x))
        if self.use_error_term:  # type: ignore[attr-defined]
            acts = self.routed_acts_view(x, "forward")
            with torch.no_grad(), _disable_hooks(self):  # type: ignore[arg-type]
                clean = self.forward_routed(acts, check_inputs=False)  # encode checked them
            idx = clean.layer_index[..., None, None].expand(*clean.layer_index.shape, 1, acts.shape[-1])
            routed_input = acts.gather(-2, idx).squeeze(-2)
            error = routed_input - clean.routed_layer_reconstruction().to(x.dtype)
            sae_out = sae_out + self.hook_sae_error(error.to(sae_out.dtype))  # type: ignore[attr-defined]
        return self.hook_sae_output(sae_out)  # type: ignore[attr-defined]

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """SAELens folds a constant input scale into W_enc/W_dec/b_dec. Per-token standardisation already
        removes any constant scale (up to eps), so with `standardize` the exact fold is to change nothing; without
        it the router's softmax is not scale-invariant and no fold exists."""
        if not self.cfg.standardize and scaling_factor != 1.0:
            raise ValueError(
                "RouteSAE cannot fold an activation scaling factor with standardize=False: the router's softmax "
                "is not scale-invariant; scale the activations before forward_routed instead"
            )
        self.cfg.normalize_activations = "none"

    def fold_activation_whitening(self, *args: Any, **kwargs: Any) -> None:
        """Refused: a whitening of the raw activations does not commute with per-token standardisation."""
        raise ValueError(
            "RouteSAE cannot fold an activation whitening: its inputs are standardised per token and routed, "
            "which an affine map of the raw activations does not commute with"
        )

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Make decoder rows unit-norm without changing any output.

        Exact when `rescale_acts_by_decoder_norm` is on (the TopK selection already sees the norms); then the
        flag is switched off. Otherwise folding would change which latents TopK keeps, so (unlike SAELens's TopK,
        which refuses) it is allowed when the rows are already unit-norm: sae-dashboard calls this unconditionally.
        """
        norms = self.W_dec.norm(dim=-1)
        unit = torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
        if not self.cfg.rescale_acts_by_decoder_norm and not unit:
            raise ValueError(
                "fold_W_dec_norm would change which latents TopK keeps: decoder rows are not unit-norm and "
                "cfg.rescale_acts_by_decoder_norm is False"
            )
        self.fold_and_get_W_dec_norm()  # type: ignore[attr-defined]
        self.cfg.rescale_acts_by_decoder_norm = False


class RouteSAE(_RoutedSAEMixin, TopKSAE):
    """Inference RouteSAE; load with `SAE.load_from_disk` / `SAE.from_pretrained` after `import sae_lens_routing`."""

    cfg: RouteSAEConfig  # type: ignore[assignment]

    @classmethod
    def from_pretrained_with_cfg_and_sparsity(  # type: ignore[override]
        cls, release: str, sae_id: str, *args: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, Any], torch.Tensor | None]:
        """SAELens's loader; a name that is neither in SAELens's release list nor a Hub repo id is most likely a
        release of this plugin's registry, which SAELens cannot read (it has no registration hook)."""
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        if "/" not in release and release not in get_pretrained_saes_directory():
            raise ValueError(
                f"release {release!r} is not in SAELens's pretrained SAEs directory nor a Hub repo id; routed SAE "
                f"releases load with sae_lens_routing.load_route_sae({release!r}, {sae_id!r})"
            )
        return super().from_pretrained_with_cfg_and_sparsity(release, sae_id, *args, **kwargs)


def normalized_mse(sae_out: torch.Tensor, sae_in: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The paper's loss: mean over tokens of ||sae_out - sae_in||^2 / ||sae_in||^2."""
    err = (sae_out.float() - sae_in.float()).pow(2).sum(-1)
    return (err / sae_in.float().pow(2).sum(-1).clamp_min(eps)).mean()


class RouteTrainingSAE(_RoutedSAEMixin, TopKTrainingSAE):
    """Training RouteSAE: batches are raw [batch, L, d_in]; the loss is the paper's normalised MSE. Saving the
    inference model folds the decoder norms (SAELens's TopK `process_state_dict_for_saving_inference`)."""

    cfg: RouteTrainingSAEConfig  # type: ignore[assignment]

    @override
    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As `encode` (stacked routed layers only), with the pre-TopK activations."""
        return self._encode_routed(x, "encode_with_hidden_pre")

    @override
    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: torch.Tensor,
        hidden_pre: torch.Tensor,
        sae_out: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """SAELens's TopK aux loss (its dead-latent selection `calculate_topk_aux_acts`, its k_aux and scale, its
        decode `act_times_W_dec` without b_dec), with each token's squared error divided by ||sae_in||^2 so it is
        on the scale of the normalised MSE it is added to. The one part routing changes is that normaliser, and
        it stays part of the graph: sae_in is the router-weighted input, so the router gets the gradient of the
        normalised loss too (as it does from the main loss; detaching it left the default recipe's router
        spread over 2.4 bits instead of 0.8 and cost KL on benchmarks/recipe.py)."""
        mask = step_input.dead_neuron_mask
        if self.cfg.aux_loss_coefficient <= 0:
            return {}
        if mask is None or (num_dead := int(mask.sum())) == 0:
            return {"auxiliary_reconstruction_loss": sae_out.new_tensor(0.0)}
        sae_in = step_input.sae_in
        k_aux = min(sae_in.shape[-1] // 2, num_dead)
        scale = min(num_dead / (sae_in.shape[-1] // 2), 1.0)
        aux_acts = calculate_topk_aux_acts(k_aux=k_aux, hidden_pre=hidden_pre, dead_neuron_mask=mask)
        recons = act_times_W_dec(aux_acts, self.W_dec, self.cfg.rescale_acts_by_decoder_norm)
        err = (recons.float() - (sae_in - sae_out).detach().float()).pow(2).sum(-1)
        loss = (err / sae_in.float().pow(2).sum(-1).clamp_min(1e-12)).mean()
        return {"auxiliary_reconstruction_loss": self.cfg.aux_loss_coefficient * scale * loss}

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        check = step_input.n_training_steps == 0 or step_input.is_logging_step
        out = self.forward_routed(step_input.sae_in, check_inputs=check)
        loss = normalized_mse(out.sae_out, out.sae_in)
        losses: dict[str, torch.Tensor] = {"normalized_mse_loss": loss}
        routed_input = dataclasses.replace(step_input, sae_in=out.sae_in)
        for name, value in self.calculate_aux_loss(
            routed_input, out.feature_acts, out.hidden_pre, out.sae_out
        ).items():
            losses[name] = value
            loss = loss + value
        return TrainStepOutput(
            sae_in=out.sae_in,
            sae_out=out.sae_out,
            feature_acts=out.feature_acts,
            hidden_pre=out.hidden_pre,
            loss=loss,
            losses=losses,
            metrics=self._routing_metrics(out),
        )

    def _routing_metrics(self, out: RoutedOutput) -> dict[str, Any]:
        """Lazy (callable) metrics, so nothing syncs with the device unless the trainer logs this step."""
        share = out.layer_weights.detach().reshape(-1, self.n_layers)
        metrics: dict[str, Any] = {
            "mse_loss": lambda: (out.sae_out.detach() - out.sae_in.detach()).pow(2).sum(-1).mean(),
        }
        cache: dict[str, torch.Tensor] = {}

        def mean_share() -> torch.Tensor:  # one device->host copy, shared by every share/entropy metric
            if "mean" not in cache:
                cache["mean"] = share.float().mean(0).cpu()
            return cache["mean"]

        for i, hook in enumerate(self.cfg.hook_names):  # the names evaluations use (`RoutedMetrics`)
            metrics[f"routing/share/{hook}"] = lambda i=i: float(mean_share()[i])
        metrics["routing/entropy_bits"] = lambda: routing_entropy_bits(mean_share())
        return metrics

    @torch.no_grad()
    def project_decoder_to_unit_norm(self) -> None:
        """Scale each decoder row to unit norm (the official `unit_norm_decoder`). Unlike folding, this
        changes the SAE's output when rows have drifted: it is a training-time constraint, not a re-write."""
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)
