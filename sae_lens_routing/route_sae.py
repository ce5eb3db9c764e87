"""`RouteSAE` (inference) and `RouteTrainingSAE` (training): one shared TopK SAE behind a layer router.

Spaces. Everything the SAE computes lives in the *standardised* space (each layer's activation of each
token scaled to mean 0, std 1, as the paper does). `forward_routed` takes raw activations of the L routed
hooks and returns the routed input and its reconstruction in that space. The single-layer methods keep
SAELens's meaning so single-hook tools work on one layer: `encode` takes raw [..., d_in] (or the L layers
stacked as [..., L*d_in], which is how sae-dashboard hands them over), `decode` returns the standardised
reconstruction, and `forward` maps raw to raw by undoing each token's own standardisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import SAE, TrainCoefficientConfig, TrainingSAE, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import calculate_topk_aux_acts
from torch import nn
from typing_extensions import override

from sae_lens_routing.config import RouteSAEConfig, RouteTrainingSAEConfig
from sae_lens_routing.integrity import check_route_state_dict
from sae_lens_routing.router import (
    Routing,
    Standardized,
    route,
    router_input,
    routing_entropy_bits,
    standardize,
)
from sae_lens_routing.topk import RoutedTopK


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


class _RoutedSAEMixin:
    """Router, standardisation and routed encode/decode, shared by the inference and training classes."""

    cfg: RouteSAEConfig | RouteTrainingSAEConfig
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    W_router: nn.Parameter
    activation_fn: RoutedTopK
    dtype: torch.dtype
    device: torch.device

    @property
    def n_layers(self) -> int:
        return len(self.cfg.hook_names)

    def initialize_weights(self) -> None:
        super().initialize_weights()  # type: ignore[misc]
        self.b_enc = nn.Parameter(torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device))
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
        checkpoints): check keys and shapes against the config first, so a mismatch names the field."""
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
        """Raise a clear ValueError unless acts is a finite [..., L, d_in] tensor."""
        want = (self.n_layers, self.cfg.d_in)
        if not isinstance(acts, torch.Tensor):
            raise ValueError(f"acts must be a torch.Tensor of shape [..., L={want[0]}, d_in={want[1]}]")
        if acts.ndim == 2 and acts.shape[-1] == want[1]:
            raise ValueError(
                f"RouteSAE got single-hook activations of shape {tuple(acts.shape)}; it needs all L={want[0]} "
                "routed layers per token, [..., L, d_in]. Train it with sae_lens_routing.RouteSAETrainingRunner "
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
        """Route raw activations of the L hooks [..., L, d_in], then encode and decode the routed input."""
        self.check_routed_acts(
            acts, check_finite=check_inputs
        )  # shapes always; finiteness syncs, so optional
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

    def _hidden_pre(self, z: torch.Tensor) -> torch.Tensor:
        sae_in = self.process_sae_in(z)  # type: ignore[attr-defined]  # dtype, hook_sae_input, minus b_dec
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)  # type: ignore[attr-defined]
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return hidden_pre

    def _encode_standardized(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature_acts, hidden_pre) of an input already in the standardised space."""
        hidden_pre = self._hidden_pre(z)
        return self.hook_sae_acts_post(self.activation_fn(hidden_pre)), hidden_pre  # type: ignore[attr-defined]

    def _decode_standardized(self, feature_acts: torch.Tensor) -> torch.Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            feature_acts = feature_acts / self.W_dec.norm(dim=-1)
        return self.hook_sae_recons(feature_acts @ self.W_dec + self.b_dec)  # type: ignore[attr-defined]

    def _encode_decode_standardized(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feature_acts, hidden_pre, sae_out; the sparse option decodes only the k kept latents."""
        if not getattr(self.cfg, "use_sparse_activations", False):
            feature_acts, hidden_pre = self._encode_standardized(z)
            return feature_acts, hidden_pre, self._decode_standardized(feature_acts)
        hidden_pre = self._hidden_pre(z)
        values, indices = self.activation_fn.topk(hidden_pre)
        feature_acts = self.hook_sae_acts_post(  # type: ignore[attr-defined]
            torch.zeros_like(hidden_pre).scatter_(-1, indices, values)
        )
        if self.cfg.rescale_acts_by_decoder_norm:
            values = values / self.W_dec.norm(dim=-1)[indices]
        flat_idx, flat_val = indices.reshape(-1, indices.shape[-1]), values.reshape(-1, values.shape[-1])
        decoded = nn.functional.embedding_bag(flat_idx, self.W_dec, per_sample_weights=flat_val, mode="sum")
        sae_out = decoded.reshape(*z.shape[:-1], self.cfg.d_in) + self.b_dec
        return feature_acts, hidden_pre, self.hook_sae_recons(sae_out)  # type: ignore[attr-defined]

    # ---- SAELens single-layer API --------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of raw activations: one layer [..., d_in], or all L layers stacked [..., L*d_in]."""
        d, n = self.cfg.d_in, self.n_layers
        if x.shape[-1] == n * d:
            return self.forward_routed(x.reshape(*x.shape[:-1], n, d)).feature_acts
        if x.shape[-1] != d:
            raise ValueError(
                f"encode expects [..., d_in={d}] (one layer) or [..., L*d_in={n * d}] (the L routed layers "
                f"stacked), got last dim {x.shape[-1]}"
            )
        z = standardize(x, self.cfg.standardize_eps, self.cfg.standardize).x
        return self._encode_standardized(z)[0]

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the standardised space (per-token stats are not recoverable from features)."""
        return self._decode_standardized(feature_acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw one-layer activations in, raw reconstruction out (each token de-standardised with its own
        mean and std); with `use_error_term` the output equals the input while hooks see the features."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"forward expects [..., d_in={self.cfg.d_in}], got {tuple(x.shape)}")
        std = standardize(x, self.cfg.standardize_eps, self.cfg.standardize)
        feature_acts, _ = self._encode_standardized(std.x)
        sae_out = std.undo(self._decode_standardized(feature_acts)).to(x.dtype)
        if self.use_error_term:  # type: ignore[attr-defined]
            sae_out = sae_out + self.hook_sae_error((x - sae_out).detach())  # type: ignore[attr-defined]
        return self.hook_sae_output(sae_out)  # type: ignore[attr-defined]

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Make decoder rows unit-norm without changing any output.

        Exact when `rescale_acts_by_decoder_norm` is on (the TopK selection already sees the norms); then the
        flag is switched off. Otherwise folding would change which latents TopK keeps, so it is only allowed
        when the rows are already unit-norm (sae-dashboard calls this unconditionally).
        """
        norms = self.W_dec.norm(dim=-1)
        if self.cfg.rescale_acts_by_decoder_norm:
            self.fold_and_get_W_dec_norm()  # type: ignore[attr-defined]
            self.cfg.rescale_acts_by_decoder_norm = False
        elif torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
            self.fold_and_get_W_dec_norm()  # type: ignore[attr-defined]
        else:
            raise ValueError(
                "fold_W_dec_norm would change which latents TopK keeps: decoder rows are not unit-norm and "
                "cfg.rescale_acts_by_decoder_norm is False"
            )


class RouteSAE(_RoutedSAEMixin, SAE[RouteSAEConfig]):
    """Inference RouteSAE; load with `SAE.load_from_disk` / `SAE.from_pretrained` after `import sae_lens_routing`."""

    def __init__(self, cfg: RouteSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)


def normalized_mse(sae_out: torch.Tensor, sae_in: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The paper's loss: mean over tokens of ||sae_out - sae_in||^2 / ||sae_in||^2."""
    err = (sae_out.float() - sae_in.float()).pow(2).sum(-1)
    return (err / sae_in.float().pow(2).sum(-1).clamp_min(eps)).mean()


class RouteTrainingSAE(_RoutedSAEMixin, TrainingSAE[RouteTrainingSAEConfig]):
    """Training RouteSAE: batches are raw [batch, L, d_in]; the loss is the paper's normalised MSE."""

    def __init__(self, cfg: RouteTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)

    @override
    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] == self.cfg.d_in:
            return self._encode_standardized(standardize(x, self.cfg.standardize_eps, self.cfg.standardize).x)
        out = self.forward_routed(x.reshape(*x.shape[:-1], self.n_layers, self.cfg.d_in))
        return out.feature_acts, out.hidden_pre

    @override
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {}

    @override
    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: torch.Tensor,
        hidden_pre: torch.Tensor,
        sae_out: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        if self.cfg.aux_loss_coefficient <= 0:
            return {}
        return {"auxiliary_reconstruction_loss": self._topk_aux_loss(step_input, hidden_pre, sae_out)}

    def _topk_aux_loss(
        self, step_input: TrainStepInput, hidden_pre: torch.Tensor, sae_out: torch.Tensor
    ) -> torch.Tensor:
        """SAELens's TopK aux loss (dead latents reconstruct the residual), divided by ||sae_in||^2 so it
        is on the scale of the normalised MSE it is added to."""
        mask = step_input.dead_neuron_mask
        if mask is None or (num_dead := int(mask.sum())) == 0:
            return sae_out.new_tensor(0.0)
        sae_in = step_input.sae_in
        k_aux = min(sae_in.shape[-1] // 2, num_dead)
        scale = min(num_dead / (sae_in.shape[-1] // 2), 1.0)
        aux_acts = calculate_topk_aux_acts(k_aux=k_aux, hidden_pre=hidden_pre, dead_neuron_mask=mask)
        recons = self._decode_standardized(aux_acts) - self.b_dec
        residual = (sae_in - sae_out).detach()
        err = (recons.float() - residual.float()).pow(2).sum(-1)
        loss = (err / sae_in.float().pow(2).sum(-1).clamp_min(1e-12)).mean()
        return self.cfg.aux_loss_coefficient * scale * loss

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        check = step_input.n_training_steps == 0 or step_input.is_logging_step
        out = self.forward_routed(step_input.sae_in, check_inputs=check)
        loss = normalized_mse(out.sae_out, out.sae_in)
        losses: dict[str, torch.Tensor] = {"normalized_mse_loss": loss}
        routed_input = TrainStepInput(
            sae_in=out.sae_in,
            coefficients=step_input.coefficients,
            dead_neuron_mask=step_input.dead_neuron_mask,
            n_training_steps=step_input.n_training_steps,
            is_logging_step=step_input.is_logging_step,
        )
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

        def layer_share(i: int) -> Callable[[], float]:
            def get() -> float:
                if "mean" not in cache:
                    cache["mean"] = share.float().mean(0).cpu()
                return float(cache["mean"][i])

            return get

        for i in range(self.n_layers):
            metrics[f"routing_share/layer_{i}"] = layer_share(i)

        def entropy() -> float:
            if "mean" not in cache:
                cache["mean"] = share.float().mean(0).cpu()
            return routing_entropy_bits(cache["mean"])

        metrics["routing_entropy_bits"] = entropy
        return metrics

    @torch.no_grad()
    def project_decoder_to_unit_norm(self) -> None:
        """Scale each decoder row to unit norm (the official `unit_norm_decoder`). Unlike folding, this
        changes the SAE's output when rows have drifted: it is a training-time constraint, not a re-write."""
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @override
    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_saving_inference(state_dict)
        if self.cfg.rescale_acts_by_decoder_norm:
            norms = self.get_W_dec_norm()
            state_dict["b_enc"] = state_dict["b_enc"] * norms
            state_dict["W_enc"] = state_dict["W_enc"] * norms[None, :]
            state_dict["W_dec"] = state_dict["W_dec"] / norms[:, None]
