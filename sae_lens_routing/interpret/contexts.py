"""What the judge sees: one routed pass's contexts and held-out excerpts, the prompts, strict parsers."""

import contextlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.analysis.feature_contexts import ContextRules, FeatureContextCollector
from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.loading.loaders import read_json_object
from sae_lens_routing.saes.routed_activations import routed_activations


@dataclass(frozen=True)
class DetectionRules:
    n_explain: int = 10  # top activating excerpts the explanation is written from
    n_quantiles: int = 4  # held-out activating excerpts: this many activation quantiles ...
    per_quantile: int = 2  # ... this many excerpts from each
    n_negative: int = 8  # held-out non-activating excerpts
    before: int = 24  # excerpt: tokens before the activating one ...
    after: int = 8  # ... and after it


@dataclass
class InterpretContexts:
    hook_names: list[str]
    features: dict[int, list[dict[str, Any]]]  # feature -> paper contexts (token, activation, layer, context)
    layer_shares: dict[int, list[float]]  # feature -> share of its activations per routed layer
    detection: dict[int, dict[str, list[dict[str, Any]]]] | None = None  # feature -> {"explain", "heldout"}
    n_latents_with_contexts: int = 0
    rules: dict[str, Any] = field(default_factory=dict)


def excerpt(tokens: list[str], pos: int, rules: DetectionRules, mark: bool) -> str:
    lo, hi = max(0, pos - rules.before), min(len(tokens), pos + rules.after + 1)
    return "".join(f"<<{t}>>" if mark and i == pos else t for i, t in enumerate(tokens[lo:hi], lo)).strip()


def detection_samples(token_strings: list[list[str]], table: torch.Tensor, feature: int,
                      rules: DetectionRules, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Held-out excerpts come from other sequences than the explanation's, so the judge cannot recall them."""
    rng = random.Random(seed * 1_000_003 + feature)
    best: dict[int, tuple[float, int]] = {}  # sequence -> (its largest activation, where)
    for s, p, _, v, _ in table[table[:, 2] == feature].tolist():
        if v > best.get(int(s), (0.0, 0))[0]:
            best[int(s)] = (v, int(p))
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
    n_explain = min(rules.n_explain, (len(ranked) + 1) // 2)
    explain = [{"text": excerpt(token_strings[s], p, rules, True), "activation": round(v, 2)}
               for s, (v, p) in ranked[:n_explain]]
    rest, heldout = ranked[n_explain:][::-1], []  # ascending activation
    for q in range(rules.n_quantiles):
        bin_ = rest[q * len(rest) // rules.n_quantiles : (q + 1) * len(rest) // rules.n_quantiles]
        picked = rng.sample(bin_, min(rules.per_quantile, len(bin_)))
        heldout += [{"text": excerpt(token_strings[s], p, rules, False), "label": 1, "quantile": q + 1,
                     "activation": round(v, 2)} for s, (v, p) in picked]
    silent = [s for s in range(len(token_strings)) if s not in best]
    heldout += [{"text": excerpt(token_strings[s], rng.randrange(len(token_strings[s])), rules, False),
                 "label": 0, "quantile": None, "activation": 0.0}
                for s in rng.sample(silent, min(rules.n_negative, len(silent)))]
    return {"explain": explain, "heldout": heldout}


def layer_shares(table: torch.Tensor, feature: int, n_layers: int) -> list[float]:
    counts = torch.bincount(table[table[:, 2] == feature][:, 4].long(), minlength=n_layers).double()
    return (counts / counts.sum().clamp(min=1)).tolist()


@torch.no_grad()
def compute_contexts(sae: Any, model: Any, tokens: torch.Tensor, *, rules: ContextRules | None = None,
                     detection: DetectionRules | None = None, batch_size: int = 8,
                     seed: int = 0) -> InterpretContexts:
    rules, detection = (rules or ContextRules()).resolved(sae.cfg.d_in), detection or DetectionRules()
    hooks, tok = list(sae.cfg.hook_names), model.tokenizer
    special = sorted({t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if t is not None})
    collect = FeatureContextCollector(model, sae, rules, special)
    rows = []  # every non-zero routed activation: (sequence, position, latent, value, layer)
    for start, batch in zip(range(0, len(tokens), batch_size), tokens.split(batch_size), strict=True):
        routed = sae.forward_routed(routed_activations(model, batch, hooks)[0])
        collect(batch, routed)
        acts = routed.feature_acts
        keep = ~torch.isin(batch, torch.tensor(special, dtype=batch.dtype, device=batch.device))
        seq, pos, feat = torch.nonzero((acts > 0) & keep[..., None], as_tuple=True)
        cols = [seq + start, pos, feat, acts[seq, pos, feat], routed.layer_index[seq, pos]]
        rows.append(torch.stack([c.float() for c in cols], 1).cpu())
    table, found = torch.cat(rows), collect.results()
    counted = {f: e.contexts for f, e in found.items() if e.is_feature(rules)}
    strings = [[t if i not in special else "" for t, i in zip(row, ids.tolist(), strict=True)]
               for row, ids in zip(collect.token_strings, tokens, strict=True)]  # special tokens shown as ""
    return InterpretContexts(hooks, counted, {f: layer_shares(table, f, len(hooks)) for f in counted},
                             {f: detection_samples(strings, table, f, detection, seed) for f in counted},
                             len(found), {"contexts": asdict(rules), "detection": asdict(detection)})


def write_contexts(contexts: InterpretContexts, path: str | Path) -> Path:
    """The layout of `feature_contexts.json` (features -> contexts), plus shares and detection excerpts."""
    features = {str(f): {"is_feature": True, "contexts": c, "layer_shares": contexts.layer_shares.get(f),
                         **({"detection": contexts.detection[f]} if contexts.detection else {})}
                for f, c in sorted(contexts.features.items())}
    payload = {"hook_names": contexts.hook_names, "rules": contexts.rules, "n_features": len(features),
               "n_latents_with_contexts": contexts.n_latents_with_contexts, "features": features}
    return atomic_write_json(path, payload, indent=1)


def read_contexts(path: str | Path, hook_names: list[str]) -> InterpretContexts:
    """This module's JSON or an evaluate run's `feature_contexts.json` (paper contexts only)."""
    data = read_json_object(Path(path))
    try:
        entries = {int(f): e for f, e in data["features"].items() if e.get("is_feature")}
        keys = {"token", "activation", "layer", "context"}
        ok = data.get("hook_names", hook_names) == hook_names and all(
            keys <= set(c) for e in entries.values() for c in e["contexts"])
    except (KeyError, TypeError, AttributeError, ValueError):  # JSONDecodeError is a ValueError
        ok = False
    if not ok:
        raise ValueError(f"--contexts {path} must be a feature-contexts JSON (features -> contexts) that was "
                         f"made for hooks {hook_names}")
    n = {f: [sum(c["layer"] == h for c in e["contexts"]) for h in hook_names] for f, e in entries.items()}
    shares = {f: e.get("layer_shares") or [k / max(1, sum(n[f])) for k in n[f]] for f, e in entries.items()}
    detection = {f: e["detection"] for f, e in entries.items() if "detection" in e}
    return InterpretContexts(hook_names, {f: e["contexts"] for f, e in entries.items()}, shares,
                             detection if len(detection) == len(entries) else None,
                             int(data.get("n_latents_with_contexts", len(entries))), data.get("rules", {}))


SYSTEM = "You are an assistant that helps explain the latent features that language models learn."

PAPER_PROMPT = """\
We are studying the features of a sparse autoencoder trained on a language model. Each feature activates on \
some tokens of a text; a token's activation value says how strongly that token relates to the feature \
(higher means a stronger association). A feature belongs to one of three categories:
A. Low-level features: word-level meaning, telling apart the senses of a polysemous word (e.g. "crushed \
things", "Europe").
B. High-level features: patterns formed over a longer span of text (e.g. "enumeration", "one of the \
[number/quantifier]").
C. Undiscernible features: noise, or patterns with no relevance.

Classify the feature below as low-level, high-level or undiscernible, and give it a monosemanticity score \
with this rubric for activation consistency:
5: a clear pattern, no deviating example
4: a clear pattern, one or two deviating examples
3: a clear overall pattern, but quite a few examples that do not fit it
2: a broad consistent theme, but no structure
1: no discernible pattern

The feature's activations (the activating token is marked <<like this>> in its context):

{contexts}Answer in exactly this format, three lines:
Feature category: [Low-level/High-level/Undiscernible]
Score: [5/4/3/2/1]
Explanation: [your brief explanation]"""

_PAPER_ANSWER = re.compile(
    r"(?ims)^[ \t]*Feature category:[ \t]*(?P<category>low-level|high-level|undiscernible)[ \t]*\n"
    r"[ \t]*Score:[ \t]*(?P<score>[1-5])[ \t]*\n[ \t]*Explanation:[ \t]*(?P<explanation>\S.*)")


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def paper_messages(contexts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:  # every context of a feature
    return chat(PAPER_PROMPT.format(contexts="".join(
        f"Token: {c['token']} | Activation: {c['activation']} | Context: {c['context']}\n\n"
        for c in contexts)))


def parse_paper(answer: str) -> dict[str, Any] | None:
    match = _PAPER_ANSWER.search(answer)
    if match is None or len(re.findall(r"Feature category:", answer, re.IGNORECASE)) != 1:
        return None
    return {"category": match["category"].lower(), "score": int(match["score"]),
            "explanation": match["explanation"].strip()}


EXPLAIN_PROMPT = """\
Below are text excerpts where one feature of a sparse autoencoder trained on a language model activates \
strongly. In each excerpt the token where it activates is marked <<like this>>, and the activation is given \
after the excerpt. Explain in one short sentence what the feature responds to, precisely enough that someone \
who reads only your explanation can tell which new texts make it activate.

{examples}
Answer in exactly one line:
Explanation: [your explanation]"""

DETECT_PROMPT = """\
A feature of a sparse autoencoder trained on a language model is explained as:
"{explanation}"

Below are {n} numbered text excerpts. The feature activates somewhere in some of them and nowhere in the \
others. Going by the explanation, decide for each excerpt whether the feature activates in it.

{examples}
Answer with a JSON list of {n} integers in excerpt order, 1 if the feature activates in the excerpt and 0 if \
not (e.g. [1, 0, 0, 1]), and nothing else."""

_EXPLANATION = re.compile(r"^[ \t]*Explanation:[ \t]*(?P<text>\S[^\n]*)", re.IGNORECASE | re.MULTILINE)
_LIST = re.compile(r"\[[^\[\]]*\]")


def explain_messages(examples: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    return chat(EXPLAIN_PROMPT.format(examples="".join(
        f"Excerpt {i}: {e['text']} (activation {e['activation']})\n" for i, e in enumerate(examples, 1))))


def parse_explanation(answer: str) -> str | None:
    found = _EXPLANATION.findall(answer)
    return found[0].strip() if len(found) == 1 else None


def detect_messages(explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
    return chat(DETECT_PROMPT.format(explanation=explanation, n=len(texts), examples="".join(
        f"Excerpt {i}: {t}\n" for i, t in enumerate(texts, 1))))


def parse_detection(answer: str, n: int) -> list[int] | None:
    found = _LIST.findall(answer)
    with contextlib.suppress(json.JSONDecodeError):
        values = json.loads(found[0]) if len(found) == 1 else None
        if values is not None and len(values) == n and all(type(v) is int and v in (0, 1) for v in values):
            return values
    return None
