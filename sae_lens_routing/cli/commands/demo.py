"""`python -m sae_lens_routing demo` (`make demo`): preset `presets/demo.yaml` trained, evaluated, shown."""

import argparse
import time
from importlib.resources import files
from pathlib import Path

import yaml
from sae_lens import SAE

from sae_lens_routing.atomic import atomic_write_json
from sae_lens_routing.cli.commands._common import positive_int
from sae_lens_routing.cli.commands.evaluate import evaluate, format_eval
from sae_lens_routing.cli.main import main
from sae_lens_routing.dashboard.report import routed_dashboard, screenshot
from sae_lens_routing.offline.corpus import corpus_tokens
from sae_lens_routing.training.run_config import apply_overrides, parse_run_config, train_from_config

HELP = "Run the main job: train a small RouteSAE on SmolLM2-135M + BBC News offline, evaluate, report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (the SAE goes to OUT/sae)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    sequences = "held-out 128-token sequences evaluated (16k tokens: a feature count that holds)"
    parser.add_argument("--eval-sequences", type=positive_int, default=128, help=sequences)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    preset = yaml.safe_load(files("sae_lens_routing.presets").joinpath("demo.yaml").read_text())
    config = parse_run_config(apply_overrides({**preset, "output_path": str(out / "sae")}, args.set))
    corpus, start = config.corpus or "bbcnews", time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    runner, summary = train_from_config(config, overwrite=True)  # replaces only a folder a demo wrote
    atomic_write_json(out / "summary.json", summary, indent=2)  # the runner printed the summary
    sae, model = SAE.load_from_disk(runner.cfg.output_path, device=str(runner.cfg.device)), runner.model
    metrics = evaluate(sae, model, out, corpus=corpus, n_sequences=args.eval_sequences, context_size=128)
    print(f"evaluation: {out}/eval.json, {out}/routing_share.png, {out}/feature_contexts.json")
    print(format_eval(metrics), flush=True)
    html, tokens = out / "dashboard.html", corpus_tokens(model, corpus, 32, 128, seed=2)
    print(f"dashboard: {html} ({routed_dashboard(sae, model, tokens, 'top:24', html).summary()})")
    try:
        print(f"dashboard screenshot: {screenshot(html, out / 'dashboard.png')}", flush=True)
    except FileNotFoundError as e:  # headless Chromium is optional
        print(f"no dashboard screenshot (apt-get install chromium): {e}", flush=True)
    argv = ["interpret", "--sae", str(out / "sae"), "--out", str(out / "interpret"), "--protocol", "both"]
    argv += ["--judge-url", "https://api.openai.com/v1", "--judge-model", "gpt-4o-mini"]
    print("ask an LLM judge (OPENAI_API_KEY set): python -m sae_lens_routing " + " ".join(argv), flush=True)
    try:
        main([*argv, "--dry-run"])
    except ValueError as e:  # e.g. no latent counts as a feature on these tokens: said, not fatal
        print(f"interpret dry run: {e}", flush=True)
    print(f"demo finished in {time.perf_counter() - start:.0f} s: outputs in {out}/")
    return 0
