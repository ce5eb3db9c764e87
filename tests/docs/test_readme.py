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
