"""`evaluate` on the demo SAE: this tree vs the code before "route once", side by side, same numbers.

Before (commit 0597e4d) every evaluation batch ran a clean forward, then a SAE splice and a zero-ablation
splice
that each re-ran the model to the last routed block inside the forward and re-routed, and the feature contexts
ran and routed the tokens once more. Now each batch has one clean forward and one routing; both splices start
at
the first routed block from a precomputed plan, and the feature contexts reuse the routing.

Each version runs in its own process (the old one from a `git worktree` of the old commit), alternating, so
both see the same machine load. Timed: `evaluate(...)` of `sae_lens_routing.cli.commands.evaluate` (what the
command does after loading the model and SAE; loading is the same code in both), and the whole command.

    python benchmarks/evaluate_speed.py --sae out/demo/sae            # after `make demo`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEFORE = "0597e4d"

TIMED = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads({threads})
from sae_lens_routing.loading.releases import load_route_sae
from sae_lens_routing.offline.local_model import load_local_model
from sae_lens_routing.cli.commands.evaluate import evaluate
sae = load_route_sae({sae!r})
model = load_local_model(sae.cfg.metadata.model_path or "smollm2")
out = Path({out!r}); out.mkdir(parents=True, exist_ok=True)
t = time.perf_counter()
evaluate(sae, model, out, corpus="bbcnews", n_sequences={n}, context_size={ctx}, threshold=15.0)
print("SECONDS", time.perf_counter() - t)
"""


def run_version(tree: Path, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """(seconds inside evaluate(), seconds of the whole process)."""
    code = TIMED.format(
        threads=args.threads,
        sae=str(Path(args.sae).resolve()),
        out=str(out),
        n=args.n_sequences,
        ctx=args.context,
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tree)
    total = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{tree}: evaluate failed\n{done.stderr[-3000:]}")
    seconds = float(next(line for line in done.stdout.splitlines() if line.startswith("SECONDS")).split()[1])
    return seconds, total


def flat_metrics(path: Path) -> dict[str, float]:
    """eval.json's numbers; the old nested `routing/share` dict under the new flat `routing/share/<hook>`."""
    data = json.loads(path.read_text())
    for hook, share in data.pop("routing/share", {}).items():
        data[f"routing/share/{hook}"] = share
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sae", default=str(ROOT / "out" / "demo" / "sae"))
    parser.add_argument("--n-sequences", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before", default=BEFORE, help="git revision of the code to compare with")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(old_tree), args.before], cwd=ROOT, check=True
        )
        try:
            times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for i in range(args.repeats):
                for name, tree in (("before", old_tree), ("after", ROOT)):
                    times[name].append(run_version(tree, args, Path(tmp) / f"{name}{i}"))
                    print(
                        f"{name}: evaluate {times[name][-1][0]:.1f} s, process {times[name][-1][1]:.1f} s",
                        flush=True,
                    )
            old, new = (
                flat_metrics(Path(tmp) / "before0/eval.json"),
                flat_metrics(Path(tmp) / "after0/eval.json"),
            )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False)

    common = sorted(set(old) & set(new))
    max_rel = max(abs(new[k] - old[k]) / max(abs(old[k]), 1e-12) for k in common)
    best = {name: (min(t[0] for t in ts), min(t[1] for t in ts)) for name, ts in times.items()}
    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
        "command": "python benchmarks/evaluate_speed.py " + " ".join(sys.argv[1:]),
        "sae": args.sae,
        "n_sequences": args.n_sequences,
        "context_size": args.context,
        "before_revision": args.before,
        "evaluate_seconds": {k: v[0] for k, v in best.items()},
        "process_seconds": {k: v[1] for k, v in best.items()},
        "evaluate_speedup": best["before"][0] / best["after"][0],
        "process_speedup": best["before"][1] / best["after"][1],
        "all_runs": times,
        "metrics_compared": len(common),
        "max_relative_metric_difference": max_rel,
        "metrics_before": {k: old[k] for k in common},
        "metrics_after": {k: new[k] for k in common},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "evaluate_speed.json").write_text(json.dumps(result, indent=2))
    print(
        f"evaluate(): {best['before'][0]:.1f} s -> {best['after'][0]:.1f} s "
        f"({result['evaluate_speedup']:.2f}x); "
        f"whole process {result['process_speedup']:.2f}x; {len(common)} metrics, max relative difference "
        f"{max_rel:.2e}"
    )


if __name__ == "__main__":
    main()
