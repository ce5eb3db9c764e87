"""`MultiLayerActivationsStore`: SAELens's `ActivationsStore`, yielding all L routed layers of each token.

Built with SAELens's own multi-hook machinery (`from_config_multi_hook` + `get_multi_hook_activations`), so
tokenisation, sequence packing, BOS/special-token exclusion, streaming, pre-tokenised datasets and resume work
as they do for single-hook SAEs. The one model forward per batch of prompts stops after the last routed block.

Memory: each buffered token holds L x d_in values, so the mixing buffer is L times a single-hook buffer with
the same `n_batches_in_buffer` (e.g. 9 layers x 2048 dims in bf16 = 36 KiB per token), kept in the configured
`dtype` on `act_store_device`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from datasets import Dataset
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.mixing_buffer import mixing_buffer
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name, get_special_token_ids
from transformer_lens.hook_points import HookedRootModule

from sae_lens_routing.training.compiled_forward import compiled_resid_post_forward, supports_compiled_forward

MAX_EMPTY_BATCHES = 100
"""Batches of prompts in a row with no token left after exclusion before the store gives up."""


class MultiLayerActivationsStore(ActivationsStore):
    """Yields shuffled training batches [train_batch_size_tokens, L, d_in] in the routed hooks' order."""

    _hook_names: list[str]
    compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    """Set by `compile_llm=True` when the hooks allow it (see `compiled_forward.py`); replaces run_with_cache."""

    @classmethod
    def from_route_config(
        cls,
        model: HookedRootModule,
        cfg: LanguageModelSAERunnerConfig[Any],
        override_dataset: HfDataset | None = None,
    ) -> MultiLayerActivationsStore:
        """The multi-layer analogue of `ActivationsStore.from_config` for a `RouteTrainingSAEConfig` run."""
        hook_names = list(cfg.sae.hook_names)
        if override_dataset is None and not cfg.dataset_path:
            raise ValueError("dataset_path must be set (or pass override_dataset)")
        if cfg.use_cached_activations:
            raise ValueError(
                "use_cached_activations=True: build the store with CachedMultiLayerActivationsStore.from_cache_config "
                "(RouteSAETrainingRunner does this)"
            )
        device = torch.device(str(cfg.act_store_device))
        if isinstance(override_dataset, Dataset):
            # SAELens calls set_format("torch") on the dataset it is given: hand it a view (same Arrow table,
            # nothing copied) so the caller's dataset keeps its own format.
            override_dataset = override_dataset.with_format(**override_dataset.format)
        store = cls.from_config_multi_hook(
            model,
            dataset=override_dataset if override_dataset is not None else cfg.dataset_path,
            hook_names=hook_names,
            hook_d_ins=dict.fromkeys(hook_names, cfg.sae.d_in),
            streaming=cfg.streaming,
            context_size=cfg.context_size,
            n_batches_in_buffer=cfg.n_batches_in_buffer,
            total_training_tokens=cfg.training_tokens,
            store_batch_size_prompts=cfg.store_batch_size_prompts,
            train_batch_size_tokens=cfg.train_batch_size_tokens,
            prepend_bos=cfg.prepend_bos,
            device=device,
            dtype=cfg.dtype,
            model_kwargs=cfg.model_kwargs,
            autocast_lm=cfg.autocast_lm,
            dataset_trust_remote_code=cfg.dataset_trust_remote_code,
            seqpos_slice=cfg.seqpos_slice,
            exclude_special_tokens=_special_token_tensor(model, cfg.exclude_special_tokens, device),
            disable_concat_sequences=cfg.disable_concat_sequences,
            sequence_separator_token=cfg.sequence_separator_token,
            activations_mixing_fraction=cfg.activations_mixing_fraction,
            use_chat_formatting=cfg.use_chat_formatting,
        )
        assert isinstance(store, MultiLayerActivationsStore)
        if cfg.compile_llm and supports_compiled_forward(model, hook_names, cfg.model_kwargs):
            store.compiled_forward = compiled_resid_post_forward(model, hook_names, cfg.llm_compilation_mode)
        return store

    @property
    def hook_names(self) -> list[str]:
        return list(self._hook_names)

    @property
    def stop_at_layer(self) -> int | None:
        """The forward stops after the last routed block (None if a hook is outside `blocks.N`)."""
        stops = [extract_stop_at_layer_from_tlens_hook_name(h) for h in self._hook_names]
        return None if any(s is None for s in stops) else max(s for s in stops if s is not None)

    @torch.no_grad()
    def get_multi_layer_activations(self, batch_tokens: torch.Tensor) -> torch.Tensor:
        """Activations [batch, context, L, d_in] of the routed hooks, in the store's dtype and device."""
        if self.compiled_forward is not None:
            with torch.autocast(batch_tokens.device.type, dtype=torch.bfloat16, enabled=self.autocast_lm):
                acts = self.compiled_forward(batch_tokens)
            return acts[:, slice(*self.seqpos_slice)].to(self.device, self.dtype)
        by_hook = self.get_multi_hook_activations(batch_tokens)
        return torch.stack([by_hook[h].to(self.device, self.dtype) for h in self._hook_names], dim=-2)

    def get_multi_layer_llm_batch(self, raise_on_epoch_end: bool = False) -> torch.Tensor:
        """One batch of prompts -> [n_tokens, L, d_in], special tokens (BOS, padding...) removed."""
        batch_tokens = self.get_batch_tokens(raise_at_epoch_end=raise_on_epoch_end)
        acts = self.get_multi_layer_activations(batch_tokens)
        token_ids = batch_tokens[:, slice(*self.seqpos_slice)].reshape(-1).to(self.device)
        acts = acts.reshape(-1, *acts.shape[-2:])
        if self.exclude_special_tokens is not None:
            acts = acts[~torch.isin(token_ids, self.exclude_special_tokens)]
        return acts

    def _iterate_multi_layer_batches(self) -> Iterator[torch.Tensor]:
        """Fill batches forever (new epoch when the dataset ends), checking each fill is finite once; refuses
        after `MAX_EMPTY_BATCHES` batches in a row that special-token exclusion left empty (it would never end)."""
        empty = 0
        while True:
            try:
                acts = self.get_multi_layer_llm_batch(raise_on_epoch_end=True)
            except StopIteration:
                acts = self.get_multi_layer_llm_batch()
            empty = empty + 1 if len(acts) == 0 else 0
            if empty >= MAX_EMPTY_BATCHES:
                raise ValueError(
                    f"{empty} batches of prompts in a row had no token left after exclude_special_tokens "
                    f"(context_size={self.context_size}, prepend_bos={self.prepend_bos}, seqpos_slice="
                    f"{tuple(self.seqpos_slice)}); raise context_size, set prepend_bos: false or "
                    "exclude_special_tokens: false"
                )
            if not bool(torch.isfinite(acts).all()):
                raise ValueError(
                    "the model produced NaN or Inf activations at the routed hooks "
                    f"{self._hook_names}; check the model dtype (float16 overflows) and inputs"
                )
            yield acts

    def get_data_loader(self) -> Iterator[torch.Tensor]:
        """SAELens's mixing buffer over [n_tokens, L, d_in] rows (it shuffles along dim 0)."""
        return mixing_buffer(
            buffer_size=self.n_batches_in_buffer * self.training_context_size,
            batch_size=self.train_batch_size_tokens,
            activations_loader=self._iterate_multi_layer_batches(),
            mix_fraction=self.activations_mixing_fraction,
        )


def _special_token_tensor(
    model: HookedRootModule, exclude: bool | list[int], device: torch.device
) -> torch.Tensor | None:
    """Same rule as `ActivationsStore.from_config`: True -> the tokenizer's special tokens."""
    if exclude is False:
        return None
    ids = get_special_token_ids(model.tokenizer) if exclude is True else exclude  # type: ignore[attr-defined]
    return torch.tensor(ids, dtype=torch.long, device=device)
