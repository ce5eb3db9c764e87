"""`RouteSAE` and `RouteTrainingSAE`: SAELens's TopK SAE behind a layer router, on the L layers stacked."""

import dataclasses
import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput, _disable_hooks
from sae_lens.saes.topk_sae import TopKSAE, TopKTrainingSAE, act_times_W_dec, calculate_topk_aux_acts
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary
from typing_extensions import override

from sae_lens_routing.saes import config, router
from sae_lens_routing.saes.router import RoutedTopK, Standardized, at_layer, routing_entropy_bits
from sae_lens_routing.saes.sae_lens_guards import single_layer_input_error


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
        """Hard routing: the raw reconstruction of each token's layer (the SAE saw `x[layer] * weight`)."""
        max_weight = self.router_weights.gather(-1, self.layer_index[..., None])
        return self.standardized.undo(self.sae_out / max_weight, self.layer_index)

    def routed_layer_input(self) -> torch.Tensor:
        """Raw activation at each token's routed layer (what a splice replaces)."""
        return self.standardized.undo(at_layer(self.standardized.x, self.layer_index), self.layer_index)


@dataclass
class DecodeStats:
    """Per token, the routed layer's std, mean and router weight, [..., 1], for `decode` (None when soft)."""

    dtype: torch.dtype
    std: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    weight: torch.Tensor | None = None


# encode's features -> (weak ref to the SAE, DecodeStats): not on the module, where another encode would clash
_ENCODED: WeakIdKeyDictionary = WeakIdKeyDictionary()
_ENCODED_LOCK = threading.Lock()


class _RoutedSAEMixin:
    """Router and standardisation in front of SAELens's TopK SAE, its API on stacked routed input."""

    cfg: config.RouteSAEConfig | config.RouteTrainingSAEConfig
    W_dec: nn.Parameter
    activation_fn: RoutedTopK

    @property
    def n_layers(self) -> int:
        return len(self.cfg.hook_names)

    def initialize_weights(self) -> None:
        super().initialize_weights()  # type: ignore[misc]
        if norm := getattr(self.cfg, "encoder_init_norm", None):  # the decoder's directions at this norm
            self.W_enc.data = (self.W_dec.data.T / self.W_dec.data.norm(dim=-1) * norm).contiguous()
        bound = self.cfg.d_in**-0.5  # nn.Linear's init, as the official (bias-free) router gets
        w = torch.empty(self.cfg.d_in, self.n_layers, dtype=self.dtype, device=self.device)
        self.W_router = nn.Parameter(w if w.device.type == "meta" else nn.init.uniform_(w, -bound, bound))

    def get_activation_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return RoutedTopK(self.cfg.k, relu=self.cfg.topk_relu)

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        """Every SAELens load path calls this: check once, unless a plugin loader already did."""
        if not isinstance(state_dict, config.CheckedState):
            config.check_route_state_dict(state_dict, self.cfg.d_in, self.cfg.d_sae, self.n_layers)
        super().process_state_dict_for_loading(state_dict)  # type: ignore[misc]

    def check_routed_acts(self, acts: torch.Tensor, check_finite: bool = True) -> None:
        """The boundary check of routed input: a finite float [..., L, d_in] tensor."""
        n, d, shape, problem = self.n_layers, self.cfg.d_in, tuple(acts.shape), None
        if not acts.is_floating_point():
            problem = f"acts must be float activations (RouteSAE standardises them), got dtype {acts.dtype}"
        elif len(shape) == 2 and shape[1] == d and shape[0] != n:
            problem = (
                f"RouteSAE got acts of shape {shape}, one hook's activations; it needs all L={n} layers, "
                f"stacked, [..., L={n}, d_in={d}]: train it with sae_lens_routing.RouteSAETrainingRunner"
            )
        elif shape[-2:] != (n, d):
            problem = f"acts must have shape [..., L, d_in] = [..., {n}, {d}], got {shape}"
        elif check_finite and not bool(torch.isfinite(acts).all()):
            problem = "acts contain NaN or Inf values; RouteSAE needs finite activations"
        config.refuse([problem])

    def route_acts(self, acts: torch.Tensor) -> tuple[Standardized, router.Routing]:
        """Standardise and route raw [..., L, d_in] activations."""
        std = router.standardize(acts, self.cfg.standardize_eps, self.cfg.standardize)
        std.x = std.x.to(self.dtype)
        pooled = std.x.sum(dim=-2) if self.cfg.router_input == "sum" else std.x.mean(dim=-2)
        logits = pooled @ self.W_router
        return std, router.route(std.x, logits, self.cfg.routing)

    def forward_routed(self, acts: torch.Tensor, check_inputs: bool = True) -> RoutedOutput:
        """Route, encode and decode raw [..., L, d_in]; `check_inputs=False` skips the finiteness sync."""
        self.check_routed_acts(acts, check_inputs)
        std, r = self.route_acts(acts)
        feature_acts, hidden_pre = TopKTrainingSAE.encode_with_hidden_pre(self, r.sae_in)  # type: ignore
        if getattr(self.cfg, "use_sparse_activations", False):  # decode the k kept latents with a gather
            values, indices = self.activation_fn.topk(hidden_pre)
            if self.cfg.rescale_acts_by_decoder_norm:
                values = values / self.W_dec.norm(dim=-1)[indices]
            idx, val = indices.reshape(-1, indices.shape[-1]), values.reshape(-1, values.shape[-1])
            decoded = nn.functional.embedding_bag(idx, self.W_dec, mode="sum", per_sample_weights=val)
            sae_out = decoded.reshape(r.sae_in.shape) + self.b_dec  # type: ignore[attr-defined]
            sae_out = self.hook_sae_recons(sae_out)  # type: ignore[attr-defined]
        else:
            sae_out = self.decode_standardized(feature_acts)
        return RoutedOutput(*vars(r).values(), feature_acts, sae_out, hidden_pre, std)  # Routing's 4 fields

    def routed_acts_view(self, x: torch.Tensor, method: str = "encode") -> torch.Tensor:
        """`x` as [..., L, d_in] from [..., L*d_in] or 4-D+; 3-D may be [batch, seq=L, d_in]: refused."""
        n, d, shape = self.n_layers, self.cfg.d_in, tuple(getattr(x, "shape", ()))
        if shape and shape[-1] == n * d:
            return x.reshape(*shape[:-1], n, d)
        if len(shape) >= 4 and shape[-2:] == (n, d):
            return x
        stacked = f"[batch, seq, L={n}, d_in={d}] or [..., L*d_in={n * d}]"
        one_layer = bool(shape) and shape[-1] == d
        raise single_layer_input_error(method, shape, n, d) if one_layer else ValueError(
            f"{method} expects the routed layers stacked, {stacked}, got shape {shape} ({type(x).__name__})")

    def _encode_routed(self, x: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature_acts, hidden_pre) of stacked raw input; the features carry their stats for `decode`."""
        acts = self.routed_acts_view(x, method)
        self.check_routed_acts(acts)
        std, r = self.route_acts(acts)
        feature_acts, hidden_pre = TopKTrainingSAE.encode_with_hidden_pre(self, r.sae_in)  # type: ignore
        stats = DecodeStats(x.dtype)
        if self.cfg.routing == "hard":
            stats.std, stats.mean = at_layer(std.std, r.layer_index), at_layer(std.mean, r.layer_index)
            stats.weight = r.router_weights.gather(-1, r.layer_index[..., None])
        with _ENCODED_LOCK:
            _ENCODED[feature_acts] = (weakref.ref(self), stats)
        return feature_acts, hidden_pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`forward_routed(...).feature_acts` of the stacked layers: [batch, seq, L, d_in] or [.., L*d_in]."""
        return self._encode_routed(x, "encode")[0]

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """Back to each token's raw routed layer, with the stats of the `encode` that returned them."""
        with _ENCODED_LOCK:
            ref, stats = _ENCODED.get(feature_acts, (None, None))
        mine = ref is not None and ref() is self
        if not mine or stats.std is None:
            raise ValueError(
                "RouteSAE.decode: a soft-routed SAE reconstructs a mix of the L standardised layers, "
                "which is no layer's raw space; use decode_standardized(feature_acts)"
                if mine
                else f"RouteSAE.decode needs encode's stats; got a {tuple(feature_acts.shape)} tensor not "
                "returned by this SAE's encode (or reshaped since); use decode_standardized(feature_acts)"
            )
        standardized = self.decode_standardized(feature_acts)
        return (standardized / stats.weight * stats.std + stats.mean).to(stats.dtype)

    def decode_standardized(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """SAELens's decode: the reconstruction in the standardised space of `forward_routed(...).sae_in`."""
        return super().decode(feature_acts)  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`decode(encode(x))`; the error term is computed without hooks, as SAELens's `SAE.forward` does."""
        sae_out = self.decode(self.encode(x))
        if self.use_error_term:  # type: ignore[attr-defined]
            acts = self.routed_acts_view(x, "forward")
            with torch.no_grad(), _disable_hooks(self):  # type: ignore[arg-type]
                clean = self.forward_routed(acts, check_inputs=False)  # encode checked them
            error = at_layer(acts, clean.layer_index) - clean.routed_layer_reconstruction().to(x.dtype)
            sae_out = sae_out + self.hook_sae_error(error.to(sae_out.dtype))  # type: ignore[attr-defined]
        return self.hook_sae_output(sae_out)  # type: ignore[attr-defined]

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """Standardisation removes a constant scale (a no-op fold); without it no fold exists."""
        config.refuse([not self.cfg.standardize and scaling_factor != 1.0 and "RouteSAE cannot fold an "
                       "activation scale with standardize=False: the router is not scale-invariant"])
        self.cfg.normalize_activations = "none"

    def fold_activation_whitening(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("RouteSAE cannot fold an activation whitening: per-token standardisation does not "
                         "commute with it")

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Exact with decoder-norm rescaling, a no-op on unit rows (sae-dashboard always calls it)."""
        norms = self.W_dec.norm(dim=-1)
        unit = torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
        config.refuse([not self.cfg.rescale_acts_by_decoder_norm and not unit and "RouteSAE cannot fold "
                       "W_dec norms: rows are not unit-norm and rescale_acts_by_decoder_norm is False"])
        self.fold_and_get_W_dec_norm()  # type: ignore[attr-defined]
        self.cfg.rescale_acts_by_decoder_norm = False


class RouteSAE(_RoutedSAEMixin, TopKSAE):
    """Inference RouteSAE: `SAE.load_from_disk` and `from_pretrained` load it (after the plugin import)."""

    cfg: config.RouteSAEConfig  # type: ignore[assignment]

    @classmethod
    def from_pretrained_with_cfg_and_sparsity(  # type: ignore[override]
        cls, release: str, sae_id: str, *args: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, Any], torch.Tensor | None]:
        """SAELens's loader; an unknown non-Hub name is likely a routed release, which SAELens cannot read."""
        if "/" not in release and release not in get_pretrained_saes_directory():
            raise ValueError(
                f"release {release!r} is not in SAELens's pretrained SAEs directory nor a Hub repo id; "
                f"routed SAE releases load with sae_lens_routing.load_route_sae({release!r}, {sae_id!r})"
            )
        return super().from_pretrained_with_cfg_and_sparsity(release, sae_id, *args, **kwargs)


def normalized_mse(sae_out: torch.Tensor, sae_in: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The paper's loss: mean over tokens of ||sae_out - sae_in||^2 / ||sae_in||^2."""
    err = (sae_out.float() - sae_in.float()).pow(2).sum(-1)
    return (err / sae_in.float().pow(2).sum(-1).clamp_min(eps)).mean()


class RouteTrainingSAE(_RoutedSAEMixin, TopKTrainingSAE):
    """Training RouteSAE: batches are raw [batch, L, d_in]; the loss is the paper's normalised MSE."""

    cfg: config.RouteTrainingSAEConfig  # type: ignore[assignment]

    @override
    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode_routed(x, "encode_with_hidden_pre")

    @override
    def calculate_aux_loss(
        self, step_input: TrainStepInput, feature_acts: Any, hidden_pre: torch.Tensor, sae_out: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """SAELens's TopK aux loss normalised by ||sae_in||^2 like the main loss; that normaliser is detached
        unless `aux_loss_moves_router` (in the graph, its 1/weight^2 pulls the router onto few layers)."""
        mask, sae_in = step_input.dead_neuron_mask, step_input.sae_in
        if self.cfg.aux_loss_coefficient <= 0:
            return {}
        if mask is None or (num_dead := int(mask.sum())) == 0:
            return {"auxiliary_reconstruction_loss": sae_out.new_tensor(0.0)}
        k_aux, scale = min(sae_in.shape[-1] // 2, num_dead), min(num_dead / (sae_in.shape[-1] // 2), 1.0)
        aux_acts = calculate_topk_aux_acts(k_aux=k_aux, hidden_pre=hidden_pre, dead_neuron_mask=mask)
        recons = act_times_W_dec(aux_acts, self.W_dec, self.cfg.rescale_acts_by_decoder_norm)
        err = (recons.float() - (sae_in - sae_out).detach().float()).pow(2).sum(-1)
        norm = (sae_in if self.cfg.aux_loss_moves_router else sae_in.detach()).float().pow(2).sum(-1)
        loss = (err / norm.clamp_min(1e-12)).mean()
        return {"auxiliary_reconstruction_loss": self.cfg.aux_loss_coefficient * scale * loss}

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        check = step_input.n_training_steps == 0 or step_input.is_logging_step
        out = self.forward_routed(step_input.sae_in, check_inputs=check)
        losses = {"normalized_mse_loss": normalized_mse(out.sae_out, out.sae_in)}
        routed_input = dataclasses.replace(step_input, sae_in=out.sae_in)
        losses.update(self.calculate_aux_loss(routed_input, out.feature_acts, out.hidden_pre, out.sae_out))
        # lazy (callable) metrics: nothing syncs with the device unless the trainer logs this step
        share = out.layer_weights.detach().reshape(-1, self.n_layers)
        mean_share = functools.cache(lambda: share.float().mean(0).cpu())  # one device->host copy for all
        metrics: dict[str, Any] = {
            "mse_loss": lambda: (out.sae_out.detach() - out.sae_in.detach()).pow(2).sum(-1).mean(),
            "routing/entropy_bits": lambda: routing_entropy_bits(mean_share()),
        }
        for i, hook in enumerate(self.cfg.hook_names):
            metrics[f"routing/share/{hook}"] = lambda i=i: float(mean_share()[i])
        return TrainStepOutput(
            sae_in=out.sae_in, sae_out=out.sae_out, feature_acts=out.feature_acts, hidden_pre=out.hidden_pre,
            loss=sum(losses.values()), losses=losses, metrics=metrics,
        )  # type: ignore[arg-type]  # fmt: skip

    def log_histograms(self) -> dict[str, Any]:
        """SAELens's, less a histogram of (near-)equal values: unit-norm decoder rows make one, and numpy 2
        refuses 64 bins over a range below float32 precision (the W&B eval log would fail)."""
        return {k: v for k, v in super().log_histograms().items() if float(v.max() - v.min()) > 1e-4}

    @torch.no_grad()
    def project_decoder_to_unit_norm(self) -> None:
        """Decoder rows to unit norm (the official `unit_norm_decoder`): a training constraint, no fold."""
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)
