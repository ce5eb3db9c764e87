"""Cache once, train many: the routed layers in SAELens's cache layout; resumes are exact."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, Sequence, Value, load_from_disk
from sae_lens.cache_activations_runner import CacheActivationsRunner
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.util import get_special_token_ids
from safetensors.torch import load_file

from sae_lens_routing import atomic
from sae_lens_routing.training.store import SAME_NAMED_FIELDS, MultiLayerActivationsStore, excluded_token_ids

METADATA_FILENAME = "routed_cache.json"
FORMAT_VERSION = 1
BF16_STORAGE = "bfloat16-bits-in-int16"  # Arrow has no bfloat16: the raw 16-bit patterns in int16 columns
_STORABLE = {"float32": "float32", "float16": "float16", "bfloat16": BF16_STORAGE}
_SHARD_BYTES = 1 << 28
_REBUILD = "rebuild it with `python -m sae_lens_routing cache-activations --overwrite`"


@dataclass
class CacheMetadata:
    """`routed_cache.json`; `special_token_ids` serve `exclude_special_tokens: true` without the model."""
    model_name: str
    hook_names: list[str]
    d_in: int
    dtype: str
    storage_dtype: str
    context_size: int
    seqpos_slice: list[int | None]
    training_context_size: int
    prepend_bos: bool
    n_sequences: int
    n_tokens: int
    n_kept_tokens: int
    special_token_ids: list[int]
    model_path: str | None = None
    model_class_name: str = "HookedTransformer"
    dataset_path: str = ""
    cache_id: int = 0
    format_version: int = FORMAT_VERSION
    files: list[str] = field(default_factory=list)

    @property
    def bytes_per_token(self) -> int:
        return len(self.hook_names) * self.d_in * (4 if self.dtype == "float32" else 2)


def read_cache_metadata(path: str | Path) -> CacheMetadata:
    """FileNotFoundError if `path` is missing, ValueError if it is another kind of folder or damaged."""
    meta_path, missing = Path(path) / METADATA_FILENAME, not Path(path).is_dir()
    try:
        data = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if data.get("format_version") == FORMAT_VERSION:
            return CacheMetadata(**data)
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, not a mapping, or other fields
        raise ValueError(f"cached_activations_path {str(path)!r}: its {METADATA_FILENAME} is damaged "
                         f"({type(e).__name__}: {str(e)[:120]}); {_REBUILD}") from None
    why = "does not exist" if missing else f"has no {METADATA_FILENAME} (format_version {FORMAT_VERSION})"
    raise (FileNotFoundError if missing else ValueError)(
        f"cached_activations_path {str(path)!r} {why}: it is not a routed activation cache; build one "
        "with `python -m sae_lens_routing cache-activations --config run.yaml`")


def _eval_sequences(cfg: LanguageModelSAERunnerConfig[Any]) -> int:
    return max(1, cfg.n_eval_batches) * cfg.store_batch_size_prompts


@torch.no_grad()
def cache_routed_activations(
    model: Any, cfg: LanguageModelSAERunnerConfig[Any], path: str | Path | None = None,
    override_dataset: HfDataset | None = None, n_tokens: int | None = None, model_path: str | None = None,
    overwrite: bool = False) -> CacheMetadata:
    """Write routed layers until `n_tokens` non-special tokens (default: training + held-out) are stored."""
    from sae_lens_routing.training.validation import validate_route_run
    if (storage := _STORABLE.get(str(cfg.dtype))) is None:
        raise ValueError(f"dtype must be one of {sorted(_STORABLE)} for an activation cache, got {cfg.dtype}")
    validate_route_run(cfg, model)
    out = Path(path or cfg.cached_activations_path or "")
    atomic.check_replaceable(out, "the cache path", overwrite)
    atomic.remove_stale_temporaries(out.parent, name=out.name)  # hidden partial caches of killed runs
    store = MultiLayerActivationsStore.from_route_config(model, cfg, override_dataset=override_dataset)
    hooks, ctx, d_in = list(cfg.sae.hook_names), store.training_context_size, cfg.sae.d_in
    special = sorted(int(i) for i in get_special_token_ids(getattr(model, "tokenizer", None)))
    excluded = excluded_token_ids(cfg.exclude_special_tokens, special)
    target = n_tokens or cfg.training_tokens + _eval_sequences(cfg) * ctx
    columns = {h: Array2D((ctx, d_in), "int16" if storage == BF16_STORAGE else storage) for h in hooks}
    features = Features({**columns, "token_ids": Sequence(Value("int32"), length=ctx)})
    rows_per_shard = _SHARD_BYTES // (len(hooks) * ctx * d_in * (4 if storage == "float32" else 2))
    n_rows = n_kept = 0
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    shard_index = itertools.count()
    with atomic.atomic_directory(out) as tmp:
        shards = tmp / ".tmp_shards"
        def write_shard() -> None:  # SAELens's shard layout, about _SHARD_BYTES each
            acts, ids = (torch.cat(t) for t in zip(*pending, strict=True))
            data = {**{h: acts[:, :, j].numpy() for j, h in enumerate(hooks)}, "token_ids": ids.numpy()}
            shard = Dataset.from_dict(data, features=features)
            shard.save_to_disk(str(shards / f"shard_{next(shard_index):05d}"), num_shards=1)
            pending.clear()
        while n_kept < target:
            try:
                tokens = store.get_batch_tokens(raise_at_epoch_end=True)
            except StopIteration:
                break
            acts = store.get_multi_layer_activations(tokens).cpu()  # [b, ctx, L, d_in]
            ids = tokens[:, slice(*cfg.seqpos_slice)].to("cpu", torch.int32)
            pending.append((acts.view(torch.int16) if storage == BF16_STORAGE else acts, ids))
            n_rows += len(ids)
            n_kept += int(ids.numel() if excluded is None else (~torch.isin(ids.long(), excluded)).sum())
            if sum(len(i) for _, i in pending) >= rows_per_shard:
                write_shard()
        if pending:
            write_shard()
        ds = CacheActivationsRunner._consolidate_shards(shards, tmp, copy_files=False)
        meta = CacheMetadata(
            model_name=cfg.model_name, model_path=model_path, model_class_name=cfg.model_class_name,
            dataset_path=cfg.dataset_path, hook_names=hooks, d_in=d_in, dtype=str(cfg.dtype),
            storage_dtype=storage, context_size=cfg.context_size, seqpos_slice=list(cfg.seqpos_slice),
            training_context_size=ctx, prepend_bos=cfg.prepend_bos, n_sequences=n_rows, n_tokens=n_rows * ctx,
            n_kept_tokens=n_kept, special_token_ids=special, cache_id=random.SystemRandom().getrandbits(62),
            files=[Path(f["filename"]).name for f in ds.cache_files])
        del ds
        atomic.atomic_write_text(tmp / METADATA_FILENAME, json.dumps(asdict(meta), indent=2))
    return meta


class CachedMultiLayerActivationsStore(MultiLayerActivationsStore):
    """Reads seeded, shuffled blocks of a routed cache (rank r of N: every N-th), eval sequences held out."""
    meta: CacheMetadata
    read_position: int = 0  # tokens of this rank's training stream consumed (what a checkpoint stores)

    @classmethod
    def from_cache_config(cls, cfg: LanguageModelSAERunnerConfig[Any], model: Any = None, rank: int = 0,
                          world_size: int = 1) -> CachedMultiLayerActivationsStore:
        """This rank's store; refuses a cache made for another run, a damaged one, or one too small."""
        path = str(cfg.cached_activations_path)
        meta = read_cache_metadata(path)
        names = "model_name sae.hook_names sae.d_in dtype context_size seqpos_slice prepend_bos".split()
        pairs = [(n, getattr(meta, n.removeprefix("sae.")), attrgetter(n)(cfg)) for n in names]
        checks = [(n, c, list(w) if isinstance(w, tuple | list) else w) for n, c, w in pairs]
        wrong = [f"was made with {n}={c!r}, but this run has {n}={w!r}" for n, c, w in checks if c != w]
        problem = wrong[0] + "; use a matching cache or build one with `cache-activations`" if wrong else None
        if problem is None:
            store = cls(
                model=model, dataset=None, hook_name=meta.hook_names[0], hook_head_index=None,
                d_in=cfg.sae.d_in, total_training_tokens=cfg.training_tokens, normalize_activations="none",
                device=torch.device(str(cfg.act_store_device)), cached_activations_path=path,
                exclude_special_tokens=excluded_token_ids(cfg.exclude_special_tokens, meta.special_token_ids),
                **{name: getattr(cfg, name) for name in SAME_NAMED_FIELDS})
            store._hook_names = list(meta.hook_names)
            store._hook_d_ins = dict.fromkeys(meta.hook_names, meta.d_in)
            store.meta = meta
            rows = len(store.cached_activation_dataset or [])
            problem = store.load_problem or (
                f"holds {rows} sequences but its {METADATA_FILENAME} says {meta.n_sequences}; {_REBUILD}"
                if rows != meta.n_sequences else store._plan(cfg, rank, world_size))
        if problem:
            raise ValueError(f"the activation cache at {path!r} {problem}")
        return store

    def load_cached_activation_dataset(self) -> Any:
        """Opened memory-mapped by SAELens's constructor; `load_problem` says why it can't be."""
        self.load_problem = None
        try:
            return load_from_disk(self.cached_activations_path).with_format("numpy")
        except Exception as e:  # noqa: BLE001  (pyarrow/datasets errors name neither the cache nor the fix)
            self.load_problem = f"cannot be read ({type(e).__name__}: {str(e)[:200]}); {_REBUILD}"
            return None

    def _keep(self, ids: torch.Tensor) -> torch.Tensor:
        excluded = self.exclude_special_tokens
        return ~torch.isin(ids, excluded) if excluded is not None else ids >= 0

    def _plan(self, cfg: LanguageModelSAERunnerConfig[Any], rank: int, world_size: int) -> str | None:
        """This rank's share of the seeded block order; what is wrong with the cache's size, if anything."""
        assert self.cached_activation_dataset is not None
        n_seq, n_eval = self.meta.n_sequences, _eval_sequences(cfg)
        n_train, block = max(0, n_seq - n_eval), max(1, cfg.n_batches_in_buffer)
        ids = self.cached_activation_dataset.with_format("numpy", columns=["token_ids"])[:]["token_ids"]
        kept = self._keep(torch.from_numpy(ids).long()).sum(1)
        starts = list(range(0, n_train, block))
        order = torch.randperm(len(starts), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        self.seed = cfg.seed
        self.blocks = [(starts[i], min(starts[i] + block, n_train)) for i in order[rank::world_size]]
        self.block_kept = [int(kept[a:b].sum()) for a, b in self.blocks]
        self.eval_range, self.eval_cursor = (n_train, n_seq), n_train
        available = sum(self.block_kept)
        return None if available >= cfg.training_tokens else (
            f"holds {available} training tokens for rank {rank} of {world_size} (special tokens and {n_eval} "
            f"held-out sequences excluded), fewer than training_tokens={cfg.training_tokens} per rank; "
            "cache more tokens (cache-activations --tokens) or lower training_tokens")

    def _read_rows(self, start: int, stop: int, shuffle_seed: int | None) -> torch.Tensor:
        rows = self.cached_activation_dataset[start:stop]
        idx = self._keep(torch.from_numpy(rows["token_ids"]).long().reshape(-1)).nonzero().squeeze(1)
        if shuffle_seed is not None:
            idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(shuffle_seed))]
        out = torch.empty(len(idx), len(self._hook_names), self.d_in, dtype=self.dtype)
        for j, hook in enumerate(self._hook_names):
            layer = torch.from_numpy(np.ascontiguousarray(rows[hook]))
            if self.meta.storage_dtype == BF16_STORAGE:  # `datasets` hands int16 columns back widened
                layer = layer.to(torch.int16).view(torch.bfloat16)
            out[:, j] = layer.reshape(-1, self.d_in).index_select(0, idx)  # cast to the run's dtype here
        return out.to(self.device)

    def get_data_loader(self) -> Iterator[torch.Tensor]:
        batch, skip = self.train_batch_size_tokens, self.read_position
        pending: torch.Tensor | None = None
        for (a, b), n_kept in zip(self.blocks, self.block_kept, strict=True):
            if skip >= n_kept:
                skip -= n_kept
                continue
            acts = self._read_rows(a, b, self.seed * 1_000_003 + a)[skip:]
            skip = 0
            pending = acts if pending is None else torch.cat([pending, acts])
            while len(pending) >= batch:
                out, pending = pending[:batch], pending[batch:]
                self.read_position += batch
                yield out

    def get_multi_layer_llm_batch(self, raise_on_epoch_end: bool = False) -> torch.Tensor:
        start, end = self.eval_range
        stop = min(self.eval_cursor + self.store_batch_size_prompts, end)
        acts = self._read_rows(self.eval_cursor, stop, None)
        self.eval_cursor = stop if stop < end else start
        return acts

    def state_dict(self) -> dict[str, torch.Tensor]:
        position, cache_id = torch.tensor(self.read_position), torch.tensor(self.meta.cache_id)
        return {"n_dataset_processed": torch.tensor(0), "cache_read_position": position, "cache_id": cache_id}

    def load(self, file_path: str) -> None:
        """Resume at the checkpoint's read position (not a live run's or another cache's checkpoint)."""
        state = load_file(file_path)
        if int(state.get("cache_id", -1)) != self.meta.cache_id:
            raise ValueError(
                f"{file_path} was trained from another activation cache than {self.cached_activations_path!r}"
                if "cache_id" in state else
                f"{file_path} was written by a run that did not read an activation cache; resume it with "
                "use_cached_activations: false")
        self.read_position = int(state["cache_read_position"])
        self._dataloader = None
