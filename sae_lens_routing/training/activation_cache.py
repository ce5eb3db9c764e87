"""Cache once, train many: the routed layers of a model over a corpus, on disk, for RouteSAE training.

Why: on a CPU (or a small GPU) the model forward to the last routed block costs far more than the SAE step, and
a sweep over k / d_sae / lr / seeds repeats that forward for every run. Cache the L routed layers once, then
train any number of RouteSAEs from the cache with the ordinary config fields `use_cached_activations: true` +
`cached_activations_path:`; the model is not loaded at all for such a run (its evaluation is routed
reconstruction on held-out cached tokens, which needs no model).

**Format** (SAELens's `CacheActivationsRunner` layout, one column per routed hook): a Hugging Face `datasets`
folder readable with `datasets.load_from_disk`; one row per sequence; one `Array2D(context, d_in)` column per
routed hook, named by the hook; a `token_ids` column (int32 [context]); plus `routed_cache.json` (see
`CacheMetadata`). A float32/float16 cache is therefore also a stock SAELens cache for any one of its hooks
(a single-layer baseline trains from it with `hook_name: <that hook>`). Arrow has no bfloat16: a bfloat16
cache keeps the raw 16-bit patterns in int16 columns (`storage_dtype: "bfloat16-bits-in-int16"`), which only
this package reads. All positions are stored (BOS included) with their token ids, so special tokens are
excluded when training, as SAELens does for its own caches.

**Reading** never loads the cache whole: Arrow files are memory-mapped and a run reads one block of
`n_batches_in_buffer` sequences at a time (the live store's buffer size), shuffles it with a generator seeded by
`seed` and the block index, and cuts training batches from the concatenation of blocks taken in a seeded
random order. A batch is therefore a pure function of (cache, seed, position): a checkpoint stores the read
position (`cache_read_position`, tokens of this rank's stream consumed) and a resumed run continues exactly as
the uninterrupted one would. The last `n_eval_batches * store_batch_size_prompts` sequences are held out for
evaluation and never trained on. Under torchrun rank r takes every N-th block.

**Writes** are atomic: everything goes to a hidden folder beside the target, renamed into place at the end.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from safetensors.torch import load_file

from sae_lens_routing.atomic import (
    atomic_directory,
    atomic_write_text,
    check_replaceable,
    remove_stale_temporaries,
)
from sae_lens_routing.training.store import MAX_EMPTY_BATCHES, MultiLayerActivationsStore

logger = logging.getLogger(__name__)

METADATA_FILENAME = "routed_cache.json"
FORMAT_VERSION = 1
BF16_STORAGE = "bfloat16-bits-in-int16"
_STORABLE = {"float32": "float32", "float16": "float16", "bfloat16": BF16_STORAGE}
_SHARD_BYTES = 1 << 30  # one Arrow file per ~1 GiB of activations


@dataclass
class CacheMetadata:
    """`routed_cache.json`: what the cache holds, checked against every run that reads it."""

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
    """Stored positions (n_sequences * training_context_size), special tokens included."""
    n_kept_tokens: int
    """Positions left after excluding `exclude_special_tokens` as set when the cache was written."""
    special_token_ids: list[int]
    """The tokenizer's special tokens, so `exclude_special_tokens: true` works without loading the model."""
    model_path: str | None = None
    model_class_name: str = "HookedTransformer"
    dataset_path: str = ""
    cache_id: int = 0
    """Random id; a checkpoint remembers it, so a resume against another cache is refused."""
    format_version: int = FORMAT_VERSION
    files: list[str] = field(default_factory=list)

    @property
    def bytes_per_token(self) -> int:
        return len(self.hook_names) * self.d_in * (4 if self.dtype == "float32" else 2)


def read_cache_metadata(path: str | Path) -> CacheMetadata:
    """The metadata of the cache folder `path` (FileNotFoundError / ValueError naming what is wrong)."""
    meta_path = Path(path) / METADATA_FILENAME
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"cached_activations_path {str(path)!r} does not exist; build it first with "
            "`python -m sae_lens_routing cache-activations --config run.yaml`"
        )
    if not meta_path.is_file():
        raise ValueError(
            f"cached_activations_path {str(path)!r} has no {METADATA_FILENAME}: it is not a routed activation "
            "cache (a single-hook SAELens cache cannot train a RouteSAE)"
        )
    data = json.loads(meta_path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {data.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    return CacheMetadata(**data)


def training_context_size(cfg: LanguageModelSAERunnerConfig[Any]) -> int:
    return len(range(cfg.context_size)[slice(*cfg.seqpos_slice)])


def _eval_sequences(cfg: LanguageModelSAERunnerConfig[Any]) -> int:
    return max(1, cfg.n_eval_batches) * cfg.store_batch_size_prompts


def default_cache_tokens(cfg: LanguageModelSAERunnerConfig[Any]) -> int:
    """Enough non-special tokens for `training_tokens` plus the held-out evaluation sequences."""
    return cfg.training_tokens + _eval_sequences(cfg) * training_context_size(cfg)


def _check_dtype(dtype: str) -> str:
    if dtype not in _STORABLE:
        raise ValueError(f"dtype must be one of {sorted(_STORABLE)} for an activation cache, got {dtype!r}")
    return _STORABLE[dtype]


def _special_ids(model: Any) -> list[int]:
    from sae_lens.util import get_special_token_ids

    tokenizer = getattr(model, "tokenizer", None)
    return sorted(int(i) for i in get_special_token_ids(tokenizer)) if tokenizer is not None else []


def _excluded_ids(exclude: bool | list[int], special_ids: list[int]) -> list[int]:
    if exclude is False:
        return []
    return list(special_ids) if exclude is True else [int(i) for i in exclude]


@torch.no_grad()
def cache_routed_activations(
    model: Any,
    cfg: LanguageModelSAERunnerConfig[Any],
    path: str | Path | None = None,
    override_dataset: HfDataset | None = None,
    n_tokens: int | None = None,
    model_path: str | None = None,
    overwrite: bool = False,
) -> CacheMetadata:
    """Run `model` over the run's dataset once and write the routed layers of every token to `path`.

    `cfg` is the training run's own config (hooks, d_in, dtype, context_size, store batch size, BOS and
    special-token settings are taken from it); `path` defaults to `cfg.cached_activations_path`. Writes until
    `n_tokens` non-special tokens are stored (default `default_cache_tokens(cfg)`: the run's tokens plus its
    held-out evaluation sequences) or the dataset ends, whichever is first.
    """
    from datasets import Array2D, DatasetInfo, Features, Sequence, Value, load_from_disk
    from datasets.arrow_writer import ArrowWriter

    from sae_lens_routing.training.validation import validate_route_config, validate_route_run

    validate_route_config(cfg)
    out = Path(path if path is not None else (cfg.cached_activations_path or ""))
    if not str(out) or str(out) == ".":
        raise ValueError("the cache needs a path: pass path= (CLI --out) or set cached_activations_path")
    check_replaceable(out, "the cache path", overwrite)
    remove_stale_temporaries(out.parent, name=out.name)  # hidden partial caches of killed runs
    storage = _check_dtype(str(cfg.dtype))
    target = default_cache_tokens(cfg) if n_tokens is None else n_tokens
    if not isinstance(target, int) or target < 1:
        raise ValueError(f"n_tokens must be a positive integer, got {n_tokens!r}")
    validate_route_run(cfg, model)

    live_cfg = copy.copy(cfg)
    live_cfg.use_cached_activations = False
    store = MultiLayerActivationsStore.from_route_config(model, live_cfg, override_dataset=override_dataset)
    hooks = list(cfg.sae.hook_names)
    ctx = store.training_context_size
    special = _special_ids(model)
    excluded = torch.tensor(_excluded_ids(cfg.exclude_special_tokens, special), dtype=torch.long)
    np_storage = "int16" if storage == BF16_STORAGE else storage
    features = Features(
        {
            **{h: Array2D(shape=(ctx, cfg.sae.d_in), dtype=np_storage) for h in hooks},
            "token_ids": Sequence(Value("int32"), length=ctx),
        }
    )
    bytes_per_row = len(hooks) * ctx * cfg.sae.d_in * (4 if storage == "float32" else 2)
    rows_per_file = max(1, _SHARD_BYTES // bytes_per_row)

    n_rows = n_kept = empty = 0
    files: list[str] = []
    with atomic_directory(out) as tmp:
        writer: ArrowWriter | None = None
        rows_in_file = 0
        try:
            while n_kept < target:
                try:
                    tokens = store.get_batch_tokens(raise_at_epoch_end=True)
                except StopIteration:
                    logger.warning("the dataset ended after %d sequences (%d tokens kept)", n_rows, n_kept)
                    break
                acts = store.get_multi_layer_activations(tokens).cpu()  # [b, ctx, L, d_in]
                ids = tokens[:, slice(*cfg.seqpos_slice)].to("cpu", torch.int32)
                if storage == BF16_STORAGE:
                    acts = acts.view(torch.int16)
                for i in range(len(ids)):  # one file per ~1 GiB, split on sequence boundaries
                    if writer is None or rows_in_file >= rows_per_file:
                        if writer is not None:
                            writer.finalize()
                            writer.close()
                        files.append(f"data-{len(files):05d}.arrow")
                        writer = ArrowWriter(
                            features=features, path=str(tmp / files[-1]), writer_batch_size=64
                        )
                        rows_in_file = 0
                    row = {h: acts[i, :, j].numpy() for j, h in enumerate(hooks)}
                    row["token_ids"] = ids[i].numpy()
                    writer.write(row)
                    rows_in_file += 1
                n_rows += len(ids)
                kept = int((~torch.isin(ids.long(), excluded)).sum())
                n_kept += kept
                empty = 0 if kept else empty + 1
                if empty >= MAX_EMPTY_BATCHES:
                    raise ValueError(
                        f"{empty} batches of prompts in a row had no token left after exclude_special_tokens "
                        f"(context_size={cfg.context_size}, prepend_bos={cfg.prepend_bos}); raise context_size, "
                        "set prepend_bos: false or exclude_special_tokens: false"
                    )
        finally:
            if writer is not None:
                writer.finalize()
                writer.close()
        if n_rows == 0:
            raise ValueError("the dataset yielded no sequence of context_size tokens; nothing was cached")
        # The two small files `datasets.load_from_disk` reads (the layout SAELens's own cache consolidation
        # writes): dataset_info.json through the public DatasetInfo API, state.json listing the Arrow files.
        DatasetInfo(features=features).write_to_directory(str(tmp))
        state = {
            "_data_files": [{"filename": f} for f in files],
            "_fingerprint": uuid.uuid4().hex[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        meta = CacheMetadata(
            model_name=cfg.model_name,
            model_path=model_path,
            model_class_name=cfg.model_class_name,
            dataset_path=cfg.dataset_path,
            hook_names=hooks,
            d_in=cfg.sae.d_in,
            dtype=str(cfg.dtype),
            storage_dtype=storage,
            context_size=cfg.context_size,
            seqpos_slice=list(cfg.seqpos_slice),
            training_context_size=ctx,
            prepend_bos=cfg.prepend_bos,
            n_sequences=n_rows,
            n_tokens=n_rows * ctx,
            n_kept_tokens=n_kept,
            special_token_ids=special,
            cache_id=random.SystemRandom().getrandbits(62),
            files=files,
        )
        atomic_write_text(tmp / METADATA_FILENAME, json.dumps(asdict(meta), indent=2))
        ds = load_from_disk(str(tmp))  # fails here, not in a later run, if the folder is unreadable
        if len(ds) != n_rows:
            raise RuntimeError(f"wrote {n_rows} sequences but the cache reads back {len(ds)}")
        del ds
    if n_kept < target:
        logger.warning(
            "cached %d tokens, fewer than the %d asked for (the dataset is too small)", n_kept, target
        )
    return meta


def check_cache_matches_run(meta: CacheMetadata, cfg: LanguageModelSAERunnerConfig[Any], path: str) -> None:
    """Refuse a cache made for another model, other hooks, d_in, dtype or context (ValueError naming it)."""
    checks: list[tuple[str, Any, Any]] = [
        ("model_name", meta.model_name, cfg.model_name),
        ("sae.hook_names", list(meta.hook_names), list(cfg.sae.hook_names)),
        ("sae.d_in", meta.d_in, cfg.sae.d_in),
        ("dtype", meta.dtype, str(cfg.dtype)),
        ("context_size", meta.context_size, cfg.context_size),
        ("seqpos_slice", list(meta.seqpos_slice), list(cfg.seqpos_slice)),
        ("prepend_bos", meta.prepend_bos, cfg.prepend_bos),
    ]
    for name, cached, wanted in checks:
        if cached != wanted:
            raise ValueError(
                f"the activation cache at {path!r} was made with {name}={cached!r}, but this run has "
                f"{name}={wanted!r}; use a matching cache or build one for this run with "
                "`python -m sae_lens_routing cache-activations`"
            )


class CachedMultiLayerActivationsStore(MultiLayerActivationsStore):
    """`MultiLayerActivationsStore` reading a routed activation cache instead of running the model.

    Built through SAELens's own `ActivationsStore(cached_activations_path=...)` constructor (no dataset, so it
    goes straight to `load_cached_activation_dataset`, overridden here to open the routed cache).
    """

    meta: CacheMetadata
    read_position: int = 0
    """Tokens of this rank's training stream consumed so far (what a checkpoint stores)."""

    @classmethod
    def from_cache_config(
        cls,
        cfg: LanguageModelSAERunnerConfig[Any],
        model: Any | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> CachedMultiLayerActivationsStore:
        """The store of a `use_cached_activations` run; `cfg` is this rank's config (tokens per rank)."""
        path = cfg.cached_activations_path
        if not cfg.use_cached_activations or not path:
            raise ValueError("use_cached_activations must be true and cached_activations_path set")
        meta = read_cache_metadata(path)
        check_cache_matches_run(meta, cfg, str(path))
        excluded = _excluded_ids(cfg.exclude_special_tokens, meta.special_token_ids)
        device = torch.device(str(cfg.act_store_device))
        store = cls(
            model=model,  # type: ignore[arg-type]  (not used: activations come from the cache)
            dataset=None,
            streaming=False,
            hook_name=meta.hook_names[0],
            hook_head_index=None,
            context_size=cfg.context_size,
            d_in=cfg.sae.d_in,
            n_batches_in_buffer=cfg.n_batches_in_buffer,
            total_training_tokens=cfg.training_tokens,
            store_batch_size_prompts=cfg.store_batch_size_prompts,
            train_batch_size_tokens=cfg.train_batch_size_tokens,
            prepend_bos=cfg.prepend_bos,
            normalize_activations="none",
            device=device,
            dtype=str(cfg.dtype),
            cached_activations_path=str(path),
            seqpos_slice=cfg.seqpos_slice,
            exclude_special_tokens=torch.tensor(excluded, dtype=torch.long) if excluded else None,
        )
        store._hook_names = list(meta.hook_names)
        store._hook_d_ins = dict.fromkeys(meta.hook_names, meta.d_in)
        store.meta = meta
        rows = len(store.cached_activation_dataset or [])
        if rows != meta.n_sequences:
            raise ValueError(
                f"the activation cache at {str(path)!r} holds {rows} sequences but its {METADATA_FILENAME} says "
                f"{meta.n_sequences}: it is damaged; rebuild it with `cache-activations --overwrite`"
            )
        store._plan(cfg, rank, world_size)
        return store

    def load_cached_activation_dataset(self) -> Any:
        """Open the cache memory-mapped (numpy rows); called by SAELens's constructor."""
        from datasets import load_from_disk

        path = self.cached_activations_path
        assert path is not None
        try:
            ds = load_from_disk(path)
        except Exception as e:  # noqa: BLE001  (pyarrow/datasets errors name neither the cache nor the fix)
            raise ValueError(
                f"the activation cache at {path!r} cannot be read ({type(e).__name__}: {str(e)[:200]}); it is "
                "damaged: rebuild it with `python -m sae_lens_routing cache-activations --overwrite`"
            ) from None
        return ds.with_format("numpy")

    def _kept_per_row(self) -> np.ndarray:
        """Non-excluded positions per sequence, from the token_ids column only (in chunks)."""
        assert self.cached_activation_dataset is not None
        ds = self.cached_activation_dataset.with_format("numpy", columns=["token_ids"])
        excluded = self.exclude_special_tokens
        counts = []
        for start in range(0, len(ds), 4096):
            ids = torch.from_numpy(np.asarray(ds[start : start + 4096]["token_ids"], dtype=np.int64))
            keep = (
                ~torch.isin(ids, excluded) if excluded is not None else torch.ones_like(ids, dtype=torch.bool)
            )
            counts.append(keep.sum(1).numpy())
        return np.concatenate(counts)

    def _plan(self, cfg: LanguageModelSAERunnerConfig[Any], rank: int, world_size: int) -> None:
        """Blocks of `n_batches_in_buffer` sequences, in a seeded order, this rank's share; checks the size."""
        n_seq = self.meta.n_sequences
        n_eval = _eval_sequences(cfg)
        n_train = n_seq - n_eval
        path = self.cached_activations_path
        if n_train <= 0:
            raise ValueError(
                f"the activation cache at {path!r} holds {n_seq} sequences, not more than the "
                f"n_eval_batches * store_batch_size_prompts = {n_eval} held out for evaluation; cache more tokens"
            )
        kept = self._kept_per_row()
        block = max(1, cfg.n_batches_in_buffer)
        starts = list(range(0, n_train, block))
        order = torch.randperm(len(starts), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        mine = order[rank::world_size]
        self.seed = cfg.seed
        self.blocks = [(starts[i], min(starts[i] + block, n_train)) for i in mine]
        self.block_kept = [int(kept[a:b].sum()) for a, b in self.blocks]
        self.eval_range = (n_train, n_seq)
        self.eval_cursor = n_train
        available = sum(self.block_kept)
        if available < cfg.training_tokens:
            who = f"rank {rank} of {world_size}" if world_size > 1 else "this run"
            raise ValueError(
                f"the activation cache at {path!r} holds {available} training tokens for {who} (after excluding "
                f"special tokens and the {n_eval} held-out evaluation sequences), fewer than "
                f"training_tokens={cfg.training_tokens * world_size}"
                + (f" ({cfg.training_tokens} per rank)" if world_size > 1 else "")
                + "; cache more tokens (cache-activations --tokens) or lower training_tokens"
            )

    def _read_rows(self, start: int, stop: int, shuffle_seed: int | None) -> torch.Tensor:
        """Rows [start, stop) -> [kept tokens, L, d_in] in the store's dtype and device, optionally shuffled."""
        ds = self.cached_activation_dataset
        assert ds is not None
        rows = ds[start:stop]
        ids = torch.from_numpy(np.asarray(rows["token_ids"], dtype=np.int64)).reshape(-1)
        keep = (
            ~torch.isin(ids, self.exclude_special_tokens)
            if self.exclude_special_tokens is not None
            else torch.ones_like(ids, dtype=torch.bool)
        )
        idx = keep.nonzero().squeeze(1)
        if shuffle_seed is not None:
            idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(shuffle_seed))]
        hooks = self._hook_names
        out = torch.empty(len(idx), len(hooks), self.d_in, dtype=self.dtype)
        for j, hook in enumerate(hooks):
            arr = np.asarray(rows[hook])
            if self.meta.storage_dtype == BF16_STORAGE:  # `datasets` hands int16 columns back widened
                layer = torch.from_numpy(arr.astype(np.int16, copy=False)).view(torch.bfloat16)
            else:
                layer = torch.from_numpy(np.ascontiguousarray(arr))
            out[:, j] = layer.reshape(-1, self.d_in).index_select(0, idx)  # cast to the run's dtype here
        return out.to(self.device)

    def _block_seed(self, block_index: int) -> int:
        return self.seed * 1_000_003 + block_index

    def _iterate_cached_batches(self, position: int) -> Iterator[torch.Tensor]:
        """Training batches from token `position` of this rank's stream (a pure function of the position)."""
        batch = self.train_batch_size_tokens
        skip = position
        pending: torch.Tensor | None = None
        for (a, b), n_kept in zip(self.blocks, self.block_kept, strict=True):
            if skip >= n_kept:
                skip -= n_kept
                continue
            acts = self._read_rows(a, b, self._block_seed(a))[skip:]
            skip = 0
            pending = acts if pending is None else torch.cat([pending, acts])
            while len(pending) >= batch:
                out, pending = pending[:batch], pending[batch:]
                self.read_position += batch
                yield out

    def get_data_loader(self) -> Iterator[torch.Tensor]:
        return self._iterate_cached_batches(self.read_position)

    def get_multi_layer_llm_batch(self, raise_on_epoch_end: bool = False) -> torch.Tensor:
        """One evaluation batch (store_batch_size_prompts held-out sequences, cycling), special tokens removed."""
        start, end = self.eval_range
        stop = min(self.eval_cursor + self.store_batch_size_prompts, end)
        acts = self._read_rows(self.eval_cursor, stop, None)
        self.eval_cursor = stop if stop < end else start
        return acts

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "n_dataset_processed": torch.tensor(0),
            "cache_read_position": torch.tensor(self.read_position),
            "cache_id": torch.tensor(self.meta.cache_id),
        }

    def load(self, file_path: str) -> None:
        """Resume at the checkpoint's read position (refusing a checkpoint from a live run or another cache)."""
        state = load_file(file_path)
        if "cache_read_position" not in state:
            raise ValueError(
                f"{file_path} was written by a run that did not read an activation cache; resume it with "
                "use_cached_activations: false"
            )
        if int(state["cache_id"]) != self.meta.cache_id:
            raise ValueError(
                f"{file_path} was trained from another activation cache than {self.cached_activations_path!r}"
            )
        self.read_position = int(state["cache_read_position"])
        self._dataloader = None
