"""SAELens's multi-hook `ActivationsStore` yielding all L routed layers per token from one forward."""

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

MAX_EMPTY_BATCHES = 100  # batches in a row with no token left after exclusion before the store gives up
SAME_NAMED_FIELDS = tuple(  # `ActivationsStore.from_config_multi_hook` arguments named as config fields
    "streaming context_size n_batches_in_buffer store_batch_size_prompts train_batch_size_tokens prepend_bos "
    "dtype model_kwargs autocast_lm dataset_trust_remote_code seqpos_slice disable_concat_sequences "
    "sequence_separator_token activations_mixing_fraction use_chat_formatting".split())


class MultiLayerActivationsStore(ActivationsStore):
    """Yields shuffled training batches [train_batch_size_tokens, L, d_in] in the routed hooks' order."""
    _hook_names: list[str]
    compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # replaces run_with_cache

    @classmethod
    def from_route_config(cls, model: HookedRootModule, cfg: LanguageModelSAERunnerConfig[Any],
                          override_dataset: HfDataset | None = None) -> MultiLayerActivationsStore:
        hook_names = list(cfg.sae.hook_names)
        if override_dataset is None and not cfg.dataset_path:
            raise ValueError("dataset_path must be set (or pass override_dataset)")
        device = torch.device(str(cfg.act_store_device))
        if isinstance(override_dataset, Dataset):  # SAELens sets its format: keep the caller's
            override_dataset = override_dataset.with_format(**override_dataset.format)
        special_ids = get_special_token_ids(getattr(model, "tokenizer", None))
        special = excluded_token_ids(cfg.exclude_special_tokens, special_ids, device)
        dataset = override_dataset if override_dataset is not None else cfg.dataset_path
        store = cls.from_config_multi_hook(
            model, dataset=dataset, hook_names=hook_names, hook_d_ins=dict.fromkeys(hook_names, cfg.sae.d_in),
            total_training_tokens=cfg.training_tokens, device=device, exclude_special_tokens=special,
            **{name: getattr(cfg, name) for name in SAME_NAMED_FIELDS})
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
        return None if None in stops else max(stops)  # type: ignore[type-var]

    @torch.no_grad()
    def get_multi_layer_activations(self, batch_tokens: torch.Tensor) -> torch.Tensor:
        if self.compiled_forward is not None:
            with torch.autocast(batch_tokens.device.type, dtype=torch.bfloat16, enabled=self.autocast_lm):
                acts = self.compiled_forward(batch_tokens)
            return acts[:, slice(*self.seqpos_slice)].to(self.device, self.dtype)
        by_hook = self.get_multi_hook_activations(batch_tokens)
        return torch.stack([by_hook[h].to(self.device, self.dtype) for h in self._hook_names], dim=-2)

    def get_multi_layer_llm_batch(self, raise_on_epoch_end: bool = False) -> torch.Tensor:
        batch_tokens = self.get_batch_tokens(raise_at_epoch_end=raise_on_epoch_end)
        acts = self.get_multi_layer_activations(batch_tokens).flatten(0, 1)
        if self.exclude_special_tokens is None:
            return acts
        token_ids = batch_tokens[:, slice(*self.seqpos_slice)].reshape(-1).to(self.device)
        return acts[~torch.isin(token_ids, self.exclude_special_tokens)]

    def _iterate_multi_layer_batches(self) -> Iterator[torch.Tensor]:
        """Batches forever, each checked finite once; refuses `MAX_EMPTY_BATCHES` empty ones in a row."""
        empty = 0
        while True:
            try:
                acts = self.get_multi_layer_llm_batch(raise_on_epoch_end=True)
            except StopIteration:
                acts = self.get_multi_layer_llm_batch()
            empty = empty + 1 if len(acts) == 0 else 0
            if empty >= MAX_EMPTY_BATCHES or not bool(torch.isfinite(acts).all()):
                raise ValueError(
                    f"{empty} batches of prompts in a row had no token left after exclude_special_tokens "
                    f"(context_size={self.context_size}, prepend_bos={self.prepend_bos}, seqpos_slice="
                    f"{tuple(self.seqpos_slice)}); raise context_size, set prepend_bos: false or "
                    "exclude_special_tokens: false" if empty else
                    f"the model produced NaN or Inf activations at the routed hooks {self._hook_names}; "
                    "check the model dtype (float16 overflows) and inputs")
            yield acts

    def get_data_loader(self) -> Iterator[torch.Tensor]:
        """SAELens's mixing buffer over [n_tokens, L, d_in] rows (it shuffles along dim 0)."""
        buffer_size = self.n_batches_in_buffer * self.training_context_size
        batches, mix = self._iterate_multi_layer_batches(), self.activations_mixing_fraction
        return mixing_buffer(buffer_size, self.train_batch_size_tokens, batches, mix_fraction=mix)


def excluded_token_ids(exclude: bool | list[int], special_ids: list[int],
                       device: torch.device | str = "cpu") -> torch.Tensor | None:
    """SAELens's `exclude_special_tokens` rule: True -> `special_ids` (the tokenizer's); a list -> its ids."""
    ids = special_ids if exclude is True else exclude or []
    return torch.tensor(sorted(int(i) for i in ids), dtype=torch.long, device=device) if ids else None
