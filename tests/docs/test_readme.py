"""No README example crashes as written: each YAML run config in it parses to a run, or is refused with one
clear line (a user error, as the CLI prints it), before any model or corpus loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import refuse_loaders

from sae_lens_routing.cli.main import USER_ERRORS
from sae_lens_routing.training.run_config import parse_run_config

README = Path(__file__).parents[2] / "README.md"


def readme_run_configs() -> list[dict]:
    blocks = (yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S))
    return [b for b in blocks if isinstance(b, dict) and "sae" in b]


@pytest.mark.real_model  # the offline examples read the bundled model's config (dequantised once, ~40 s)
def test_readme_run_configs_parse_or_fail_in_one_line(tmp_path, monkeypatch):
    refuse_loaders(monkeypatch)
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED"):  # a newcomer's machine: no W&B login
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    configs = readme_run_configs()
    assert len(configs) >= 2 and any("model_path" in c for c in configs)  # the quick start's offline config
    for data in configs:
        if "model_path" in data:  # the offline examples must run as written
            assert parse_run_config(data).runner.logger.log_to_wandb is False
            continue
        try:
            parse_run_config(data)
        except USER_ERRORS as e:  # e.g. device: cuda on a CPU machine, or W&B without a login
            assert "\n" not in str(e), str(e)


@pytest.mark.real_model  # the bundled SmolLM2 and BBC News, as a newcomer runs them (shortened)
def test_readme_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    """The quick start's YAML and commands (training shortened by overrides) leave the folders it names."""
    from sae_lens_routing.cli.main import cli

    text = README.read_text()
    quick = text[text.index("## Quick start") : text.index("## Set-up")]
    (tmp_path / "quickstart.yaml").write_text(re.search(r"```yaml\n(.*?)```", quick, re.S).group(1))
    commands = re.findall(r"^\.venv/bin/python -m sae_lens_routing (.*?)(?:\s+#.*)?$", quick, re.M)
    assert [c.split()[0] for c in commands] == ["train", "evaluate", "dashboard", "steer"]
    monkeypatch.chdir(tmp_path)
    short = {"train": ["--set", "training_tokens=2048"],
             "evaluate": ["--n-sequences", "8"], "dashboard": ["--n-sequences", "8", "--features", "top:2"]}
    for command in commands:
        argv = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', command)]
        assert cli([*argv, *short.get(argv[0], [])]) == 0, capsys.readouterr().err
    sae = tmp_path / "out/quickstart/sae"
    assert {"cfg.json", "sae_weights.safetensors", "training_metrics.json"} <= {p.name for p in sae.iterdir()}
    assert (tmp_path / "out/quickstart/eval/eval.json").is_file()
    assert (tmp_path / "out/quickstart/dashboard.html").stat().st_size > 100_000
    assert "steered:" in capsys.readouterr().out
