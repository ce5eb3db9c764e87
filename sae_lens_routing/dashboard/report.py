"""sae-dashboard's page and Neuronpedia JSON for a RouteSAE, its routed layers on one pseudo hook point."""

import copy
import dataclasses
import json
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cached_property, partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint

from sae_lens_routing.analysis.feature_contexts import token_texts
from sae_lens_routing.atomic import atomic_write_bytes, atomic_write_text
from sae_lens_routing.dashboard.panels import add_panels, inline_assets
from sae_lens_routing.interpret.results import neuronpedia_explanations
from sae_lens_routing.saes.config import hook_layer
from sae_lens_routing.saes.routed_activations import (
    PSEUDO_HOOK,
    check_hooks_in_model,
    routed_activations,
    routed_block_range,
)

TOP_EXAMPLES = 20  # sae-dashboard's top-example count
NEWLINE = "\u21b5"  # ↵
NEWLINE_PIECES = re.compile("\u010a|<0x0A>|\n")  # line breaks: byte-level BPE, SentencePiece bytes, raw
CONTEXT_BEFORE, CONTEXT_AFTER = 6, 5  # sae-dashboard's 5 each side of a top example, +1 for the loss effect


@dataclasses.dataclass
class TokenScan:
    """Every token's top-k latents (values, indices: [n, seq, k]) and routed layer ([n, seq])."""
    values: torch.Tensor
    indices: torch.Tensor
    layer_index: torch.Tensor
    d_sae: int
    n_layers: int

    def rank(self, candidates: list[int], limit: int | None, full: int) -> tuple[list[int], list[int]]:
        """(live, dead): those filling the `full` top rows first, else rare spiky latents would lead."""
        span = slice(CONTEXT_BEFORE, self.values.shape[1] - CONTEXT_AFTER)
        values, indices = self.values[:, span].reshape(-1), self.indices[:, span].reshape(-1)
        values, indices = values[values > 0], indices[values > 0]
        counts = torch.bincount(indices, minlength=self.d_sae).tolist()
        maxima = torch.zeros(self.d_sae).scatter_reduce_(0, indices, values, "amax").tolist()
        order = sorted(candidates, key=lambda f: (counts[f] < full, -maxima[f], -counts[f], f))
        return [f for f in order if counts[f]][:limit], sorted(f for f in candidates if not counts[f])

    def tidy_and_route(self, vis_data: Any, features: list[int]) -> dict[int, dict[str, Any]]:
        """Drop sae-dashboard's zero-padding top rows and self-correlation; return per-feature routing."""
        stats: dict[int, dict[str, Any]] = {}
        for feature in features:
            data = vis_data.feature_data_dict[feature]
            acts = torch.where(self.indices == feature, self.values, 0.0).sum(-1)  # [n, seq]
            top = data.sequence_data.seq_group_data[0]  # "TOP ACTIVATIONS"
            top.seq_data = [s for s in top.seq_data if acts[s.original_index, s.qualifying_token_index] > 0]
            tables = data.feature_tables_data
            keep = [i for i, f in enumerate(tables.correlated_features_indices) if f != feature]
            for name in (f"correlated_features_{c}" for c in ("indices", "pearson", "cossim")):
                setattr(tables, name, [getattr(tables, name)[i] for i in keep])
            top_layers = torch.tensor([int(self.layer_index[s.original_index, s.qualifying_token_index])
                                       for s in top.seq_data], dtype=torch.long)
            active = self.layer_index[acts > 0]
            counts = torch.bincount(active, minlength=self.n_layers)
            sums = torch.zeros(self.n_layers).double().index_add_(0, active, acts[acts > 0].double())
            share = torch.bincount(top_layers, minlength=self.n_layers) / max(len(top_layers), 1)
            share, mean = ([round(x, 4) for x in t.tolist()] for t in (share, sums / counts.clamp_min(1)))
            stats[feature] = {"top_activation_share": share, "mean_activation": mean,
                              "n_top_activations": len(top_layers), "n_active_tokens": int(counts.sum()),
                              "active_tokens_per_layer": counts.tolist()}
        return stats


@torch.no_grad()
def scan_tokens(sae: Any, model: Any, tokens: torch.Tensor, batch_size: int = 16) -> TokenScan:
    """Route every token once; keep its `sae.cfg.k` largest latents (a TopK RouteSAE has no more nonzero)."""
    hooks, k = list(sae.cfg.hook_names), int(sae.cfg.k)
    check_hooks_in_model(model, hooks, in_blocks=True)  # the routed hook point sits in the last one
    parts = []
    for batch in tokens.split(batch_size):
        out = sae.forward_routed(routed_activations(model, batch, hooks)[0])
        top = out.feature_acts.float().topk(k, dim=-1)
        parts.append((top.values.cpu(), top.indices.cpu(), out.layer_index.cpu()))
    values, indices, layers = (torch.cat(part) for part in zip(*parts, strict=True))
    return TokenScan(values, indices, layers, sae.cfg.d_sae, len(hooks))


def parse_features(spec: str | Sequence[int], d_sae: int) -> tuple[list[int], int | None]:
    """`"top:24"` -> (every latent, 24); `"0-63"`, `"1,5,9"`, `"0-9,20"` or a list of ints -> (them, None)."""
    text, limit, features = (spec.strip() if isinstance(spec, str) else ""), None, []
    with suppress(ValueError):
        if text.startswith("top:"):
            limit = int(text[4:])
            features = list(range(d_sae)) if 1 <= limit <= d_sae else []
        elif isinstance(spec, str):
            parts = [p.partition("-") for p in text.split(",") if p.strip()]
            features = [f for lo, _, hi in parts for f in range(int(lo), int(hi or lo) + 1)]
        elif all(type(f) is int for f in spec):
            features = list(spec)
    if not features or not all(0 <= f < d_sae for f in features):
        raise ValueError(f"features must be 'top:N' with 1 <= N <= d_sae={d_sae} or latent indices in "
                         f"[0, d_sae={d_sae}) (integers, not booleans), got {spec!r}")
    return sorted(set(features)), limit


@dataclasses.dataclass
class DashboardData:
    vis_data: Any  # sae-dashboard's SaeVisData for `features`
    routing: dict[int, dict[str, Any]]  # per feature, see TokenScan.tidy_and_route
    features: list[int]  # in the page's order: it opens on features[0]
    dead_latents: list[int]  # requested latents that never fired on the tokens (not shown)
    hook_names: list[str]
    model_name: str  # the SAE's cfg.metadata.model_name
    requested: str  # the features argument as given ("top:24", "0-63")
    n_candidates: int  # latents it named (top:N: every latent of the SAE)

    def summary(self) -> str:
        fired, n_dead = self.n_candidates - len(self.dead_latents), len(self.dead_latents)
        found = f"{fired} fired and are shown; {n_dead} never fired on these tokens"
        if self.requested.startswith("top:"):
            found = (f"the {len(self.features)} most active of the {fired} latents that fired on these "
                     f"tokens (those with {TOP_EXAMPLES}+ activating examples first); {n_dead} of the SAE's "
                     f"{self.n_candidates} latents never fired")
        return f"{self.requested} requested: {found}; opens on latent {self.features[0]}"


class RoutedModelView:
    """`model` as sae-dashboard reads it, plus the hook point `blocks.N.hook_resid_routed` (routed layers
    stacked) and a `W_U` with the final norm's gain folded in (sae-dashboard's `W_dec @ W_U` assumes it). A
    view: the model is untouched, so a TransformerBridge, which cannot add a hook point, works the same."""

    def __init__(self, model: Any, hook_names: list[str]):
        self.model, self.routed = model, list(hook_names)
        self.hook_name = f"blocks.{routed_block_range(self.routed)[1] - 1}.{PSEUDO_HOOK}"  # type: ignore[index]
        self.hook_point = HookPoint()

    def __getattr__(self, name: str) -> Any:  # tokenizer, cfg...: the model's
        return getattr(self.__dict__["model"], name)

    @property
    def hook_dict(self) -> dict[str, Any]:
        return {**self.model.hook_dict, self.hook_name: self.hook_point}

    @cached_property  # sae-dashboard reads it once per feature batch: folded once
    def W_U(self) -> torch.Tensor:
        gain = getattr(getattr(self.model, "ln_final", None), "w", None)  # None: folded, or no final norm
        return self.model.W_U if gain is None else gain.to(self.model.W_U.dtype)[:, None] * self.model.W_U

    def run_with_hooks(self, tokens: torch.Tensor, *, fwd_hooks: Sequence[tuple[str, Any]] = (),
                       **kwargs: Any) -> Any:
        on_routed = [fn for name, fn in fwd_hooks if name == self.hook_name]
        seen: dict[int, torch.Tensor] = {}

        def collect(act: torch.Tensor, hook: Any, i: int) -> None:
            seen[i] = act
            if len(seen) == len(self.routed):
                stacked = torch.cat([seen.pop(j) for j in range(len(self.routed))], dim=-1)
                for fn in on_routed:
                    fn(stacked, hook=self.hook_point)

        hooks = [(h, partial(collect, i=i)) for i, h in enumerate(self.routed)]
        hooks += [(name, fn) for name, fn in fwd_hooks if name != self.hook_name]
        return self.model.run_with_hooks(tokens, fwd_hooks=hooks, **kwargs)


def dashboard_data(sae: Any, model: Any, tokens: torch.Tensor,
                   features: str | Sequence[int] = "top:24") -> DashboardData:
    """Route the tokens once, keep the live latents of `features` most active first, run sae-dashboard."""
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner
    if not hasattr(sae, "forward_routed"):
        raise ValueError(f"dashboards need a RouteSAE, got {type(sae).__name__}")
    context, d_vocab = CONTEXT_BEFORE + CONTEXT_AFTER, model.cfg.d_vocab
    n, seq_len = tokens.shape if tokens.ndim == 2 else (0, 0)
    bad = seq_len <= context or n * (seq_len - context) < TOP_EXAMPLES or tokens.is_floating_point()
    if bad or not 0 <= tokens.min() <= tokens.max() < d_vocab:  # else sae-dashboard fails deep inside
        raise ValueError(f"tokens must be an integer tensor [n_sequences, seq_len] with seq_len > {context}, "
                         f"n_sequences * (seq_len - {context}) >= {TOP_EXAMPLES}, ids in [0, "
                         f"d_vocab={d_vocab}), got {tokens.dtype} {tuple(tokens.shape)}")
    candidates, limit = parse_features(features, sae.cfg.d_sae)
    scan = scan_tokens(sae, model, tokens)
    shown, dead = scan.rank(candidates, limit, full=TOP_EXAMPLES)
    if not shown:
        raise ValueError(f"none of features {features!r} fired on these tokens; try features='top:24'")
    encoder, view = copy.deepcopy(sae), RoutedModelView(model, sae.cfg.hook_names)  # it folds W_dec norms
    cfg = SaeVisConfig(view.hook_name, shown, 64, 16, device=str(tokens.device), verbose=False)  # minibatches
    vis_data = SaeVisRunner(cfg).run(encoder=encoder, model=view, tokens=tokens)
    routing = scan.tidy_and_route(vis_data, shown)
    requested = features if isinstance(features, str) else f"{len(candidates)} latents"
    hooks, name = list(sae.cfg.hook_names), str(sae.cfg.metadata.model_name)
    return DashboardData(vis_data, routing, shown, dead, hooks, name, requested, len(candidates))


def display_tokens(tokenizer: Any, newline: str = NEWLINE) -> dict[int, str]:
    """Token id -> the text it shows (byte-level "Â£" -> "£", line breaks ↵; half a character: its piece)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    state = decoder.__getstate__() if decoder is not None else None  # its JSON, e.g. a Sequence holding one
    show = tokenizer.convert_tokens_to_string if b'"ByteLevel"' in (state or b"") else "".join
    shown = {i: (p, show([p])) for p, i in tokenizer.get_vocab().items()}
    return {i: NEWLINE_PIECES.sub(newline, p if "\ufffd" in t else t) for i, (p, t) in shown.items()}


@contextmanager
def characters_joined(vis_data: Any, shown: dict[int, str]) -> Iterator[list[tuple[str, int]]]:
    """sae-dashboard shows each id's text alone, so a character split over byte-level tokens would show its
    pieces ("Â£"): inside, such runs have display-only ids past the vocabulary (text "" then the character),
    yielded as (text, id) pairs; the real ids are back on exit."""
    tokenizer, extra, restore = vis_data.model.tokenizer, {}, []
    base = max(max(shown) + 1, int(vis_data.model.cfg.d_vocab))  # past every id a logit table can show
    try:
        for feature in vis_data.feature_data_dict.values():
            for seq in (q for group in feature.sequence_data.seq_group_data for q in group.seq_data):
                texts, ids = token_texts(tokenizer, list(seq.token_ids)), list(seq.token_ids)
                pieces = [i for i, (t, tok) in enumerate(zip(texts, ids, strict=True))
                          if "\ufffd" in tokenizer.decode([tok]) and "\ufffd" not in t]  # fmt: skip
                if pieces:
                    restore.append((seq, seq.token_ids))
                    seq.token_ids = [extra.setdefault(NEWLINE_PIECES.sub(NEWLINE, texts[i]),
                                                      base + len(extra)) if i in pieces else tok
                                     for i, tok in enumerate(ids)]  # fmt: skip
        yield [(text, i) for text, i in extra.items()]
    finally:
        for seq, ids in restore:
            seq.token_ids = ids


def write_dashboard_html(data: DashboardData, out_html: str | Path,
                         interpretability: dict[str, Any] | None = None) -> Path:
    """sae-dashboard's page of `data` opening on `features[0]`, plus panels; tokens as `display_tokens`."""
    from sae_dashboard.data_writing_fns import save_feature_centric_vis
    # sae-dashboard inverts `tokenizer.vocab.items()`: (text, id) pairs keep two tokens of one text apart
    shown = display_tokens(data.vis_data.model.tokenizer)
    with tempfile.TemporaryDirectory() as scratch, characters_joined(data.vis_data, shown) as joined:
        pairs = [(text, i) for i, text in shown.items()] + joined
        view = SimpleNamespace(tokenizer=SimpleNamespace(vocab=SimpleNamespace(items=lambda: pairs)))
        stock = Path(scratch) / "stock.html"
        vis_data = dataclasses.replace(data.vis_data, model=view)  # the real model is not touched
        save_feature_centric_vis(sae_vis_data=vis_data, filename=stock, feature_idx=data.features[0])
        html = stock.read_text(encoding="utf-8")
    panel = ("paper", "category", "score", "explanation", "detection", "detection_explanation",
             "detection_accuracy")  # what the judge panel shows of each feature
    judged = interpretability and {f: {k: v.get(k) for k in panel}
                                   for f, v in interpretability["features"].items()}
    routing = {"hooks": data.hook_names, "order": data.features, "dead_latents": data.dead_latents}
    routing["stats"] = {str(k): v for k, v in data.routing.items()}
    return atomic_write_text(out_html, inline_assets(add_panels(html, routing, data.summary(), judged)))


def routed_dashboard(sae: Any, model: Any, tokens: torch.Tensor, features: str | Sequence[int],
                     out_html: str | Path) -> DashboardData:
    write_dashboard_html(data := dashboard_data(sae, model, tokens, features), out_html)
    return data


def vocab_dict(model: Any) -> dict[int, str]:
    """Token id -> its text for Neuronpedia (as `display_tokens`, line breaks kept), padded to d_vocab."""
    from sae_dashboard.neuronpedia.neuronpedia_runner import OUT_OF_RANGE_TOKEN
    out = display_tokens(model.tokenizer, newline="\n")
    return out | {i: OUT_OF_RANGE_TOKEN for i in range(model.cfg.d_vocab) if i not in out}


def neuronpedia_batch(data: DashboardData, *, sae_set: str = "routesae", model_id: str | None = None,
                      interpretability: dict[str, Any] | None = None) -> dict[str, Any]:
    """sae-dashboard's Neuronpedia batch plus each feature's `routing` (and judge's `explanations`)."""
    from sae_dashboard.neuronpedia.neuronpedia_converter import NeuronpediaConverter
    from sae_dashboard.neuronpedia.neuronpedia_runner_config import NeuronpediaRunnerConfig
    hooks, model, model_id = data.hook_names, data.vis_data.model, model_id or data.model_name
    np_cfg = NeuronpediaRunnerConfig(sae_set, "", "", model_id=model_id, layer=hook_layer(hooks[-1]))
    with characters_joined(data.vis_data, display_tokens(model.tokenizer)) as joined:
        vocab = vocab_dict(model) | {i: text for text, i in joined}  # the converter reads only cfg.d_vocab
        view = SimpleNamespace(cfg=SimpleNamespace(d_vocab=max(vocab) + 1))
        np_json = NeuronpediaConverter.convert_to_np_json(view, data.vis_data, np_cfg, vocab)
    batch, np_layer = json.loads(np_json), f"{np_cfg.layer}-{sae_set}"  # np_layer: Neuronpedia's SAE id
    for feature in batch["features"]:
        index = int(feature["feature_index"])
        feature["routing"] = {"hook_names": hooks, **data.routing[index]}
        if interpretability is not None:
            feature["explanations"] = neuronpedia_explanations(interpretability, index, model_id=model_id,
                                                               np_layer=np_layer)
    return batch | {"routed_hook_names": hooks, "dead_latents": data.dead_latents}


def screenshot(html: str | Path, png: str | Path, width: int = 1400, height: int = 1600) -> Path:
    """A PNG of the page as a person would see it, by headless Chromium (offline, a fresh profile)."""
    flags = ("--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking "
             "--disable-component-update --disable-sync --virtual-time-budget=5000").split()
    with tempfile.TemporaryDirectory() as scratch:
        shot = Path(scratch) / "page.png"
        subprocess.run(["chromium", *flags, f"--user-data-dir={scratch}/profile", f"--screenshot={shot}",
                        f"--window-size={width},{height}", Path(html).resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
        return atomic_write_bytes(Path(png), shot.read_bytes())
