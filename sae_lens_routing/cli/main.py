"""`python -m sae_lens_routing [--debug] COMMAND`: each `cli/commands/` module (HELP, add_arguments, run)."""

import argparse
import functools
import importlib
import pkgutil
import sys
from typing import NoReturn

from sae_lens_routing.cli import commands
from sae_lens_routing.training.checkpoints import RunInterrupted, interrupts_as_keyboard_interrupt

USER_ERRORS = (ValueError, TypeError, OSError)  # bad input or a path it cannot use, named in the message


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless required or its help already says what it means."""
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if action.required or "default" in text else super()._get_help_string(action) or text


class ArgumentParser(argparse.ArgumentParser):
    """argparse reads a value that starts with '-' (`--feature -1=8`) as a flag: say how to pass it."""
    def error(self, message: str) -> NoReturn:
        hint = " (a value starting with '-' goes after '=', e.g. --feature=-1=8)"
        super().error(message + hint * message.endswith("expected one argument"))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m sae_lens_routing", description="RouteSAE for SAELens")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if m.name[0] != "_"):
        module = importlib.import_module(f"sae_lens_routing.cli.commands.{module_name}")
        name = module_name.replace("_", "-")  # `cache_activations.py` -> `cache-activations`
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None, *, program: bool = False) -> int:
    """Embedded, exceptions go through; as the `program`, `error:` (2) or `interrupted:` (130) lines."""
    args = build_parser().parse_args(argv)
    try:
        with interrupts_as_keyboard_interrupt():  # a stop cleans up like Ctrl-C (partial writes removed)
            return int(args._run(args) or 0)
    except (*USER_ERRORS, KeyboardInterrupt) as e:
        if args.debug or not program:
            raise
        stop = isinstance(e, KeyboardInterrupt)  # training's RunInterrupted says where it saved progress
        said = "nothing was saved; partial files were removed"
        said = e if not stop or isinstance(e, RunInterrupted) else said
        print(f"{'interrupted' if stop else 'error'}: {said}", file=sys.stderr)
        return 130 if stop else 2


cli = functools.partial(main, program=True)  # `python -m sae_lens_routing`
