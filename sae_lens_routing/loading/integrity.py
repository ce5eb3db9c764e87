"""Integrity checks for saved routed SAEs: fail on load with a message that says what is wrong and where.

SAELens's own loaders read whatever they are given and fail deep inside safetensors or `load_state_dict`. These
checks run first, in the plugin's validating converters (`sae_lens_routing.loading.loaders`), and the key/shape check
also runs on SAELens's default path through `RouteSAE.process_state_dict_for_loading`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sae_lens.constants import SAE_CFG_FILENAME
from sae_lens.registry import get_sae_class
from safetensors import SafetensorError, safe_open

from sae_lens_routing.saes.state_dict import IntegrityError, check_route_state_dict

# Bytes per element of each safetensors dtype, to check that a header's offsets describe its tensors.
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def read_cfg_json(folder: str | Path) -> dict[str, Any]:
    """The folder's cfg.json as a dict; a clear error when it is missing or not a JSON object."""
    path = Path(folder) / SAE_CFG_FILENAME
    if not Path(folder).is_dir():
        raise IntegrityError(f"SAE folder not found: {folder}")
    if not path.is_file():
        raise IntegrityError(
            f"{path} is missing: a SAELens SAE folder holds {SAE_CFG_FILENAME} and sae_weights.safetensors "
            "(what save_inference_model writes)"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path} is not valid JSON (corrupted or truncated): {e}") from e
    if not isinstance(cfg, dict):
        raise IntegrityError(f"{path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def check_architecture(cfg: Mapping[str, Any], source: str) -> str:
    """The cfg's architecture, which must be registered with SAELens (the plugin registers "routesae")."""
    arch = cfg.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise IntegrityError(f"{source}: cfg has no 'architecture' field (expected e.g. 'routesae')")
    try:
        get_sae_class(arch)
    except KeyError:
        raise IntegrityError(
            f"{source}: architecture {arch!r} is not registered with SAELens. For routed SAEs run "
            "`import sae_lens_routing` first (it registers 'routesae'); other architectures need the plugin "
            "that defines them."
        ) from None
    return arch


def check_safetensors_file(path: str | Path) -> dict[str, Any]:
    """Validate a safetensors file's framing without reading its tensors; returns the parsed header.

    Catches what a partial download or a damaged copy leaves: a file shorter than its header says, a header
    that is not JSON, offsets that do not match the tensor shapes, or trailing bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path} is missing")
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise IntegrityError(f"{path} is truncated: {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if (n > _MAX_HEADER_BYTES or 8 + n > size) and prefix.startswith((b"PK\x03\x04", b"\x80")):
            raise IntegrityError(
                f"{path} is not a safetensors file: it looks like a torch.save/pickle file, which is never "
                "unpickled here; re-save the weights with safetensors (save_inference_model does)"
            )
        if n > _MAX_HEADER_BYTES:
            raise IntegrityError(f"{path} is corrupted: header length field says {n} bytes")
        if 8 + n > size:
            raise IntegrityError(f"{path} is truncated: header needs {8 + n} bytes, file has {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{path} is corrupted: its header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise IntegrityError(f"{path} is corrupted: its header is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
            nbytes = _DTYPE_BYTES[dtype] * int(torch.Size(shape).numel())
        except (KeyError, TypeError, ValueError) as e:
            raise IntegrityError(
                f"{path} is corrupted: bad header entry for tensor {name!r}: {info!r}"
            ) from e
        if stop - start != nbytes:
            raise IntegrityError(
                f"{path} is corrupted: tensor {name!r} ({dtype}, shape {shape}) needs {nbytes} bytes, "
                f"its offsets span {stop - start}"
            )
        end = max(end, stop)
    data = size - 8 - n
    if data < end:
        raise IntegrityError(
            f"{path} is truncated: tensor data needs {end} bytes after the header, has {data}"
        )
    if data > end:
        raise IntegrityError(f"{path} is corrupted: {data - end} unexpected bytes after the tensor data")
    return header


def read_safetensors(
    path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Check a safetensors file, then read every tensor (optionally cast to dtype)."""
    check_safetensors_file(path)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device=device) as f:  # type: ignore[no-untyped-call]
            for key in f.keys():  # noqa: SIM118
                t = f.get_tensor(key)
                out[key] = t if dtype is None else t.to(dtype)
    except SafetensorError as e:
        raise IntegrityError(f"{path} is corrupted: {e}") from e
    return out


def check_route_cfg_and_weights(
    cfg: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    """The routesae cfg fields the shapes depend on, then the weights against them."""
    missing = [f for f in ("d_in", "d_sae", "hook_names") if f not in cfg]
    if missing:
        raise IntegrityError(f"{source}: cfg.json lacks {missing} (needed for architecture 'routesae')")
    hook_names = cfg["hook_names"]
    if not isinstance(hook_names, list):
        raise IntegrityError(f"{source}: cfg hook_names must be a list of hook names, got {hook_names!r}")
    check_route_state_dict(
        state_dict,
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        n_layers=len(hook_names),
        source=source,
        check_finite=True,
    )


def check_sparsity(sparsity: torch.Tensor, d_sae: int, source: str) -> None:
    """SAELens's sparsity file holds one log10 firing frequency per latent."""
    if tuple(sparsity.shape) != (d_sae,):
        raise IntegrityError(
            f"{source}: sparsity has shape {tuple(sparsity.shape)}, expected ({d_sae},) = (d_sae,)"
        )
