"""`python -m sae_lens_routing [--debug] <command>`: one module per command in `sae_lens_routing/cli/commands/`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Commands are
discovered, so adding one never touches this file; only the chosen command's module is imported in full.

User errors. Bad input (a config field of the wrong type, a missing file, a malformed `--set`...) raises one of
`USER_ERRORS`: ValueError, TypeError, FileNotFoundError or FileExistsError, with a message naming the argument or
field and what was expected. The program (`python -m sae_lens_routing`, the `sae-lens-routing` script: `cli()`)
prints such an error as one line, `error: <message>`, on stderr and exits with 2 (argparse's code for bad usage);
`--debug` shows the full traceback instead. Ctrl-C or SIGTERM ends with one `interrupted:` line (where training
saved its progress, or that nothing was saved) and exit code 130. Any other exception is a bug and always shows its traceback.
`main(argv)` runs a command and lets every exception through, for callers that embed the CLI (and tests).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from sae_lens_routing.cli import commands
from sae_lens_routing.training.checkpoints import RunInterrupted, interrupts_as_keyboard_interrupt

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except required options and those whose help already says
    what their default means (a None resolved at run time)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or "default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sae_lens_routing", description="RouteSAE for SAELens")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of a user error (bad config, missing file)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"sae_lens_routing.cli.commands.{name}")
        # `cache_activations.py` -> `cache-activations` (module names cannot hold a hyphen)
        p = sub.add_parser(
            name.replace("_", "-"), help=module.HELP, description=module.HELP, formatter_class=HelpFormatter
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; exceptions propagate (see `cli` for the program's error reporting)."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


def cli(argv: list[str] | None = None) -> int:
    """The program: a user error is one `error: ...` line on stderr and exit code 2, unless `--debug`."""
    args = build_parser().parse_args(argv)
    try:
        with interrupts_as_keyboard_interrupt():  # a stop cleans up like Ctrl-C (partial writes removed)
            return int(args._run(args) or 0)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # training says where it saved progress (RunInterrupted)
        if args.debug:
            raise
        said = str(e) if isinstance(e, RunInterrupted) else "nothing was saved; partial files were removed"
        print(f"interrupted: {said}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
