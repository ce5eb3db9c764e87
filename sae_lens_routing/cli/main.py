"""`python -m sae_lens_routing <command>`: one module per command in `sae_lens_routing/cli/commands/`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Commands are
discovered, so adding one never touches this file; only the chosen command's module is imported in full.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from sae_lens_routing.cli import commands


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sae_lens_routing", description="RouteSAE for SAELens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"sae_lens_routing.cli.commands.{name}")
        # `cache_activations.py` -> `cache-activations` (module names cannot hold a hyphen)
        p = sub.add_parser(name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
