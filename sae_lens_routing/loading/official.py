"""Official RouteSAE checkpoints (github.com/swei2001/RouteSAEs): a bare state_dict `.pt` beside a sidecar
`routesae_official.json`, e.g. {"checkpoint": "RouteSAE_1B_k64.pt", "k": 64, "n_layers": 16}."""

import functools
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sae_lens
import torch
from sae_lens import SAE

from sae_lens_routing.loading.loaders import download_hub_files
from sae_lens_routing.saes.config import CheckedState, IntegrityError, check_route_state_dict, refuse
from sae_lens_routing.saes.config import paper_hook_names as paper_hooks
from sae_lens_routing.saes.route_sae import RouteSAE

OFFICIAL_SIDECAR_FILENAME = "routesae_official.json"
SIDECAR_FIELDS = "checkpoint k n_layers hook_names routing router_input topk_relu model_name".split()
OFFICIAL_KEYS = {  # official name -> ours; the official Linear weights are transposed
    "router.weight": "W_router", "sae.pre_bias": "b_dec", "sae.latent_bias": "b_enc",
    "sae.encoder.weight": "W_enc", "sae.decoder.weight": "W_dec",
}  # fmt: skip


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """An official `.pt`, unpickling nothing but tensors, with exactly the official float weights."""
    state, error = None, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        error = e
    if isinstance(error, pickle.UnpicklingError):
        problem = (
            " is not a weights-only checkpoint (it pickles non-tensor objects); refusing to unpickle it. "
            f"Re-save it as a plain state_dict of tensors. ({str(error).splitlines()[0]})"
        )
    elif error:
        problem = f" is truncated or not a torch checkpoint: {error}"
    elif not isinstance(state, dict):
        problem = f" must hold a state_dict (dict of tensors), got {type(state).__name__}"
    elif set(state) != set(OFFICIAL_KEYS):
        missing, extra = sorted(set(OFFICIAL_KEYS) - set(state)), sorted(set(state) - set(OFFICIAL_KEYS))
        problem = f" is not an official RouteSAE checkpoint: missing keys {missing}, unexpected keys {extra}"
    elif bad := {k: str(getattr(v, "dtype", type(v))) for k, v in state.items()
                 if not (isinstance(v, torch.Tensor) and v.is_floating_point())}:  # fmt: skip
        problem = f": entries {bad} are not float tensors, as the weights of an official RouteSAE are"
    else:
        return state
    raise ValueError(f"{path}{problem}") from error


def official_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None,
    fetch: Callable[..., Path] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:  # fmt: skip
    """SAELens disk-protocol converter for a folder holding an official `.pt` and its sidecar; `fetch` (the
    Hub converter's) downloads its files first."""
    folder, overrides = Path(path), dict(cfg_overrides or {})
    sidecar = {k: overrides.pop(k) for k in SIDECAR_FIELDS if k in overrides}
    name = OFFICIAL_SIDECAR_FILENAME
    if fetch:
        folder = fetch((), (name,)) if "checkpoint" in sidecar else fetch((name,))
    if (folder / name).is_file():
        sidecar = {**json.loads((folder / name).read_text(encoding="utf-8")), **sidecar}
    checkpoint, problem = sidecar.get("checkpoint"), None
    if not sidecar:
        problem = f"{folder / name} is missing (it names the .pt and gives k and the routed layers)"
    elif unknown := sorted(set(sidecar) - set(SIDECAR_FIELDS)):
        problem = f"{folder}: unknown sidecar fields {unknown}; allowed: {SIDECAR_FIELDS}"
    elif not isinstance(checkpoint, str) or not checkpoint.endswith(".pt") or "/" in checkpoint:
        problem = f"{folder}: 'checkpoint' must name the .pt file in the same folder, got {checkpoint!r}"
    elif ("hook_names" in sidecar) == ("n_layers" in sidecar):
        problem = f"{folder}: give exactly one of 'hook_names' (the routed hooks) or 'n_layers' (the model's)"
    refuse([problem], IntegrityError)
    path = (fetch((checkpoint,)) if fetch else folder) / checkpoint
    hooks = list(sidecar.get("hook_names") or paper_hooks(sidecar["n_layers"]))
    state = read_official_state_dict(path)
    weights = CheckedState({ours: state[theirs].t().contiguous() for theirs, ours in OFFICIAL_KEYS.items()})
    d_in, d_sae = weights["b_dec"].shape[0], weights["b_enc"].shape[0]
    check_route_state_dict(weights, d_in, d_sae, len(hooks), str(path))
    metadata = {"model_name": sidecar.get("model_name"), "hook_name": hooks[-1], "hook_names": hooks,
                "sae_lens_version": sae_lens.__version__}  # >= 6: SAELens keeps the cfg as it is
    cfg = {
        "architecture": "routesae", "d_in": d_in, "d_sae": d_sae, "k": sidecar.get("k"), "hook_names": hooks,
        "routing": sidecar.get("routing", "hard"), "router_input": sidecar.get("router_input", "sum"),
        "topk_relu": sidecar.get("topk_relu", False), "rescale_acts_by_decoder_norm": False,
        "device": device, "dtype": "float32", "metadata": metadata, **overrides,
    }  # fmt: skip
    dtype = getattr(torch, str(cfg["dtype"]).removeprefix("torch."))
    return cfg, CheckedState({k: v.to(device=device, dtype=dtype) for k, v in weights.items()})


def official_huggingface_loader(
    repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None, revision: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], None]:  # fmt: skip
    """SAELens Hugging Face-protocol converter for official checkpoints (which keep no sparsity)."""
    kwargs = {"force_download": force_download, "revision": revision}
    fetch = functools.partial(download_hub_files, repo_id, folder_name, **kwargs)
    return (*official_disk_loader(folder_name, device, cfg_overrides, fetch), None)


def load_official_checkpoint(
    path: str | Path, *, device: str = "cpu", dtype: str = "float32", **sidecar: Any
) -> RouteSAE:
    """A `RouteSAE` computing what the official model does; `sidecar` gives what the `.pt` lacks (`k`...)."""
    fields = {**sidecar, "checkpoint": Path(path).name}

    def converter(folder: Path, device: str, cfg_overrides: dict[str, Any] | None) -> Any:
        return official_disk_loader(folder, device, {**fields, **(cfg_overrides or {})})

    return SAE.load_from_disk(Path(path).parent, device, dtype, converter)  # type: ignore[return-value]
