"""`python -m sae_lens_routing demo --out out/demo`: the main job (`make demo`).

Trains a small RouteSAE on SmolLM2-135M over BBC News offline (preset `presets/demo.yaml`), then runs every
later step in `DEMO_STEPS` on it (evaluation, then an offline sae-dashboard page of live latents). Each step takes the shared `DemoContext` and writes under `--out`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands._common import positive_int
from sae_lens_routing.training.run_config import (
    RunConfig,
    apply_overrides,
    parse_run_config,
    train_from_config,
)

HELP = "Run the main job: train a small RouteSAE on SmolLM2-135M + BBC News offline, evaluate, report."
PRESET = "demo.yaml"


@dataclass
class DemoContext:
    out: Path
    config: RunConfig
    eval_sequences: int = 128
    runner: Any = None
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def preset_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(files("sae_lens_routing.presets").joinpath(PRESET).read_text())


def train_step(ctx: DemoContext) -> None:
    # A second `make demo` replaces the SAE folder the first wrote; a folder it did not write is refused.
    ctx.runner, ctx.summary = train_from_config(ctx.config, overwrite=True)
    atomic_write_json(ctx.out / "summary.json", ctx.summary, indent=2)  # the runner printed the summary


def evaluate_step(ctx: DemoContext) -> None:
    from sae_lens_routing.cli.commands.evaluate import evaluate, format_eval

    metrics = evaluate(
        ctx.runner.sae_for_analysis(),
        ctx.runner.model,
        ctx.out,
        corpus=ctx.config.corpus or "bbcnews",
        n_sequences=ctx.eval_sequences,
        context_size=128,
        threshold=None,  # the paper's 15 scaled to d_in
    )
    ctx.summary["eval"] = metrics
    print(f"evaluation: {ctx.out}/eval.json, {ctx.out}/routing_share.png, {ctx.out}/feature_contexts.json")
    print(format_eval(metrics), flush=True)


def dashboard_step(ctx: DemoContext) -> None:
    from sae_lens_routing.dashboard.report import routed_dashboard
    from sae_lens_routing.offline.corpus import corpus_tokens

    sae = ctx.runner.sae_for_analysis()
    model = ctx.runner.model
    tokens = corpus_tokens(model, ctx.config.corpus or "bbcnews", 32, 128, seed=2)
    html = ctx.out / "dashboard.html"
    print(f"dashboard: {html} ({routed_dashboard(sae, model, tokens, 'top:24', html).summary()})")
    try:
        from sae_lens_routing.dashboard.browser import screenshot

        print(f"dashboard screenshot: {screenshot(html, ctx.out / 'dashboard.png')}", flush=True)
    except FileNotFoundError as e:  # headless Chromium is optional (apt-get install chromium)
        print(f"no dashboard screenshot: {e}", flush=True)


def interpret_step(ctx: DemoContext) -> None:
    from sae_lens_routing.cli.main import main

    argv = ["interpret", "--sae", str(ctx.out / "sae"), "--out", str(ctx.out / "interpret"), "--protocol", "both"]
    argv += ["--judge-url", "https://api.openai.com/v1", "--judge-model", "gpt-4o-mini"]
    print("ask an LLM judge (OPENAI_API_KEY set): python -m sae_lens_routing " + " ".join(argv), flush=True)
    try:
        main([*argv, "--dry-run"])
    except ValueError as e:  # e.g. no latent counts as a feature on these tokens: said, not fatal
        print(f"interpret dry run: {e}", flush=True)


DEMO_STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("train", train_step),
    ("evaluate", evaluate_step),
    ("dashboard", dashboard_step),
    ("interpret", interpret_step),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (the SAE goes to OUT/sae)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field"
    )
    parser.add_argument(
        "--eval-sequences", type=positive_int, default=128,
        help="held-out 128-token sequences evaluated (16k tokens: enough text for a feature count that holds)",
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    preset = {**preset_config(), "output_path": str(out / "sae")}
    ctx = DemoContext(out, parse_run_config(apply_overrides(preset, args.set)), args.eval_sequences)
    out.mkdir(parents=True, exist_ok=True)
    for name, step in DEMO_STEPS:
        start = time.perf_counter()
        print(f"== demo step: {name}", flush=True)
        step(ctx)
        ctx.timings[name] = round(time.perf_counter() - start, 1)
    print(f"demo finished: outputs in {out}/ (step times, s: {ctx.timings})")
    return 0
