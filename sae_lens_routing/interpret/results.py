"""Results per routed layer, since the paper finds shallow layers give low-level features."""

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from sae_lens_routing.atomic import atomic_write_bytes, atomic_write_json
from sae_lens_routing.loading.loaders import read_json_object

FILENAME = "interpretability.json"
PLOT_FILENAME = "interpretability.png"
CATEGORIES = ("low-level", "high-level", "undiscernible")  # the paper's


@dataclass
class FeatureInterpretation:
    feature: int
    layer_shares: list[float]  # share of the feature's activations per routed layer (hook order)
    layer: str  # the dominant routed layer
    paper: str | None = None  # "scored", "unparsed", or None when the protocol was not run
    category: str | None = None
    score: int | None = None
    explanation: str | None = None
    detection: str | None = None  # "scored", "unparsed", "no_heldout" or None
    detection_explanation: str | None = None
    detection_accuracy: float | None = None  # balanced accuracy on the held-out excerpts
    heldout: dict[str, int] = field(default_factory=dict)  # counts: activating, non_activating, per quantile
    unparsed: dict[str, str] = field(default_factory=dict)  # the last answer that did not parse, per step


@dataclass
class InterpretationResult:
    protocol: str
    judge_model: str
    judge_url: str
    seed: int
    hook_names: list[str]
    n_features_counted: int
    features: list[FeatureInterpretation]
    usage: dict[str, int] = field(default_factory=dict)
    estimated_cost_usd: float | None = None

    @property
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_features": len(self.features)}
        layers = {h: [f for f in self.features if f.layer == h] for h in self.hook_names}
        for name in ("paper", "detection"):
            if any(getattr(f, name) for f in self.features):
                per = {h: {"n_features": len(fs), **_block(name, fs)} for h, fs in layers.items()}
                out[name] = {**_block(name, self.features), "per_layer": per}
        return out

    def as_dict(self) -> dict[str, Any]:
        features = {str(f.feature): asdict(f) for f in self.features}
        return {**asdict(self), "features": features, "summary": self.summary}


def _mean(values: list[Any]) -> float | None:
    return round(mean(values), 4) if values else None


def _block(name: str, features: list[FeatureInterpretation]) -> dict[str, Any]:
    scored = [f for f in features if getattr(f, name) == "scored"]
    out = {"n_scored": len(scored), "n_unparsed": sum(getattr(f, name) == "unparsed" for f in features)}
    if name == "detection":
        return {**out, "n_without_heldout": sum(f.detection == "no_heldout" for f in features),
                "mean_balanced_accuracy": _mean([f.detection_accuracy for f in scored])}
    categories = {c: [f.score for f in scored if f.category == c] for c in CATEGORIES}
    return {**out, "mean_score": _mean([f.score for f in scored]),
            "categories": {c: {"count": len(s), "mean_score": _mean(s)} for c, s in categories.items()}}


def write_result(result: InterpretationResult, out: str | Path) -> tuple[Path, Path]:
    import numpy as np
    from matplotlib.figure import Figure

    data, hook_names = result.as_dict(), result.hook_names
    json_path = atomic_write_json(Path(out) / FILENAME, data, indent=1)
    x = list(range(len(hook_names)))
    fig = Figure(figsize=(max(8.0, 0.9 * len(x) + 4), 3.4), dpi=100)
    left, right = fig.subplots(1, 2)
    left.set(ylabel="features", title="paper categories per routed layer")
    right.set(ylim=(0, 5), ylabel="mean paper score (1-5)", title="interpretability per routed layer")
    if paper := data["summary"].get("paper"):
        layers = [paper["per_layer"][h] for h in hook_names]
        counts = np.array([[layer["categories"][c]["count"] for layer in layers] for c in CATEGORIES])
        for cat, n, below in zip(CATEGORIES, counts, counts.cumsum(0) - counts, strict=True):
            left.bar(x, n, bottom=below, label=cat)
        left.legend(fontsize=8)
        right.bar(x, [layer["mean_score"] or 0 for layer in layers], label="mean paper score (1-5)")
    if detection := data["summary"].get("detection"):
        values = [detection["per_layer"][h]["mean_balanced_accuracy"] for h in hook_names]
        acc = right.twinx() if paper else right
        acc.plot(x, [float("nan") if v is None else v for v in values], "o-", color="C3")
        acc.set(ylim=(0, 1), ylabel="detection balanced accuracy")
    for ax in (left, right):
        ax.set_xticks(x, [h.removesuffix(".hook_resid_post").removeprefix("blocks.") for h in hook_names])
        ax.set_xlabel("routed layer (block)")
    fig.tight_layout()
    fig.savefig(buf := io.BytesIO(), format="png")
    return json_path, atomic_write_bytes(Path(out) / PLOT_FILENAME, buf.getvalue())


def read_result(path: str | Path) -> dict[str, Any]:
    """An `interpretability.json` (or the folder holding it), checked once here where it is read."""
    path = Path(path) / FILENAME if Path(path).is_dir() else Path(path)
    data = read_json_object(path)
    if not isinstance(data.get("features"), dict) or "summary" not in data:
        raise ValueError(f"{path} is not an interpretability.json written by `interpret`")
    return data


def neuronpedia_explanations(data: dict[str, Any], feature: int, *, model_id: str,
                             np_layer: str) -> list[dict[str, Any]]:
    """A feature's explanations in Neuronpedia's explanation format (its export's fields, with scores)."""
    entry, judge = data["features"].get(str(feature), {}), data.get("judge_model")
    return [{"modelId": model_id, "layer": np_layer, "index": str(feature), "description": entry[text_key],
             "explanationModelName": judge, "typeName": kind,
             "scores": [] if entry.get(score_key) is None else [{"value": entry[score_key],
                        "explanationScoreTypeName": score_type, "explanationScoreModelName": judge}]}
            for kind, text_key, score_type, score_key in (
                ("routesae-paper-rubric", "explanation", "routesae-monosemanticity-1-5", "score"),
                ("detection", "detection_explanation", "detection-balanced-accuracy", "detection_accuracy"))
            if entry.get(text_key)]
