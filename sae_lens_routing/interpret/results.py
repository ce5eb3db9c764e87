"""Typed results of an interpretation run, their summary (overall, per category, per routed layer), JSON, plot.

A feature belongs to the routed layer most of its activations were routed from (its dominant layer): the
paper's claim to check is that shallow layers give low-level features and deep ones high-level features.
Unparsed answers are counted and listed, never scored.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from sae_lens_routing.atomic import atomic_write_bytes, atomic_write_json
from sae_lens_routing.interpret.prompts import CATEGORIES

FILENAME = "interpretability.json"
PLOT_FILENAME = "interpretability.png"


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
    unparsed: dict[str, str] = field(
        default_factory=dict
    )  # the judge's last answer that did not parse, per step


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
        return summarize(self.features, self.hook_names)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = {str(f.feature): asdict(f) for f in self.features}
        return {**out, "summary": self.summary}


def _mean(values: list[float]) -> float | None:
    return round(mean(values), 4) if values else None


def _paper_block(features: list[FeatureInterpretation]) -> dict[str, Any]:
    scored = [f for f in features if f.paper == "scored"]
    return {
        "n_scored": len(scored),
        "n_unparsed": sum(f.paper == "unparsed" for f in features),
        "mean_score": _mean([f.score for f in scored]),  # type: ignore[misc]
        "categories": {
            c: {
                "count": sum(f.category == c for f in scored),
                "mean_score": _mean([f.score for f in scored if f.category == c]),  # type: ignore[misc]
            }
            for c in CATEGORIES
        },
    }


def _detection_block(features: list[FeatureInterpretation]) -> dict[str, Any]:
    scored = [f for f in features if f.detection == "scored"]
    return {
        "n_scored": len(scored),
        "n_unparsed": sum(f.detection == "unparsed" for f in features),
        "n_without_heldout": sum(f.detection == "no_heldout" for f in features),
        "mean_balanced_accuracy": _mean([f.detection_accuracy for f in scored]),  # type: ignore[misc]
    }


def summarize(features: list[FeatureInterpretation], hook_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_features": len(features)}
    blocks = []
    if any(f.paper for f in features):
        blocks.append(("paper", _paper_block))
    if any(f.detection for f in features):
        blocks.append(("detection", _detection_block))
    for name, block in blocks:
        out[name] = block(features)
        out[name]["per_layer"] = {
            h: {
                "n_features": sum(f.layer == h for f in features),
                **block([f for f in features if f.layer == h]),
            }
            for h in hook_names
        }
    return out


def write_result(result: InterpretationResult, out: str | Path) -> tuple[Path, Path]:
    """`interpretability.json` (strict JSON) and `interpretability.png` in `out`."""
    out = Path(out)
    data = result.as_dict()
    json_path = atomic_write_json(out / FILENAME, data, indent=1)
    return json_path, render_plot(data["summary"], result.hook_names, out / PLOT_FILENAME)


def render_plot(summary: dict[str, Any], hook_names: list[str], path: Path) -> Path:
    """Per routed layer: category counts (stacked) and the mean paper score / detection accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [h.removesuffix(".hook_resid_post").removeprefix("blocks.") for h in hook_names]
    x = range(len(labels))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(labels) + 4), 3.4), dpi=100)
    paper, detection = summary.get("paper"), summary.get("detection")
    if paper:
        bottom = [0] * len(labels)
        for cat, color in zip(CATEGORIES, ("#4C72B0", "#DD8452", "#999999")):
            counts = [paper["per_layer"][h]["categories"][cat]["count"] for h in hook_names]
            left.bar(x, counts, bottom=bottom, label=cat, color=color)
            bottom = [b + c for b, c in zip(bottom, counts)]
        left.legend(fontsize=8)
        scores = [paper["per_layer"][h]["mean_score"] or 0 for h in hook_names]
        right.bar(x, scores, color="#4C72B0", label="mean paper score (1-5)")
        right.set_ylim(0, 5)
        right.set_ylabel("mean paper score (1-5)")
    left.set_title("paper categories per routed layer")
    left.set_xticks(list(x), labels)
    left.set_xlabel("routed layer (block)")
    left.set_ylabel("features")
    if detection:
        acc = right.twinx() if paper else right
        values = [detection["per_layer"][h]["mean_balanced_accuracy"] for h in hook_names]
        acc.plot(list(x), [v if v is not None else float("nan") for v in values], "o-", color="#C44E52")
        acc.set_ylim(0, 1)
        acc.set_ylabel("detection balanced accuracy", color="#C44E52")
    right.set_title("interpretability per routed layer")
    right.set_xticks(list(x), labels)
    right.set_xlabel("routed layer (block)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def card_lines(data: dict[str, Any]) -> list[str]:
    """Markdown lines summarising an `interpretability.json` (for the Hub model card)."""
    summary = data.get("summary", {})
    lines = [
        f"Judge `{data.get('judge_model')}`, {summary.get('n_features', 0)} sampled of "
        f"{data.get('n_features_counted')} counted features (seed {data.get('seed')}).",
        "",
    ]
    paper, detection = summary.get("paper"), summary.get("detection")
    if paper:
        cats = ", ".join(
            f"{c} {v['count']} (mean {v['mean_score']})" for c, v in paper["categories"].items() if v["count"]
        )
        lines.append(
            f"- paper rubric: mean score {paper['mean_score']} over {paper['n_scored']} features "
            f"({paper['n_unparsed']} answers unparsed); {cats}"
        )
    if detection:
        lines.append(
            f"- detection: mean balanced accuracy {detection['mean_balanced_accuracy']} over "
            f"{detection['n_scored']} features ({detection['n_unparsed']} unparsed)"
        )
    for name, block, key in (
        ("paper", paper, "mean_score"),
        ("detection", detection, "mean_balanced_accuracy"),
    ):
        if block:
            per = ", ".join(f"`{h}` {v[key]} (n={v['n_scored']})" for h, v in block["per_layer"].items())
            lines.append(f"- {name} per routed layer: {per}")
    return lines


SHOWN_FIELDS = (
    "paper",
    "category",
    "score",
    "explanation",
    "detection",
    "detection_explanation",
    "detection_accuracy",
)


def read_result(path: str | Path) -> dict[str, Any]:
    """An `interpretability.json` (or the folder holding it), checked enough to name what is wrong."""
    import json

    path = Path(path)
    path = path / FILENAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no interpretability file {path} (the `interpret` command writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data["features"], dict) or "summary" not in data:
            raise KeyError("features")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an interpretability.json written by `interpret`: {e}") from None
    return data


def explanations_by_feature(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Feature -> what the dashboard shows of it (category, score, explanations, detection accuracy)."""
    return {int(f): {k: v.get(k) for k in SHOWN_FIELDS} for f, v in data["features"].items()}


def neuronpedia_explanations(
    data: dict[str, Any], feature: int, *, model_id: str, np_layer: str
) -> list[dict[str, Any]]:
    """A feature's explanations in Neuronpedia's explanation format (its export's fields, with scores)."""
    entry = data["features"].get(str(feature))
    if entry is None:
        return []
    judge = data.get("judge_model")
    out = []
    for kind, text, score_type, score in (
        (
            "routesae-paper-rubric",
            entry.get("explanation"),
            "routesae-monosemanticity-1-5",
            entry.get("score"),
        ),
        (
            "detection",
            entry.get("detection_explanation"),
            "detection-balanced-accuracy",
            entry.get("detection_accuracy"),
        ),
    ):
        if text:
            out.append(
                {
                    "modelId": model_id,
                    "layer": np_layer,
                    "index": str(feature),
                    "description": text,
                    "explanationModelName": judge,
                    "typeName": kind,
                    "scores": []
                    if score is None
                    else [
                        {
                            "value": score,
                            "explanationScoreTypeName": score_type,
                            "explanationScoreModelName": judge,
                        }
                    ],
                }
            )
    return out
