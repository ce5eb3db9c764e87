"""The command line's own surface: every option documented with its default, the SAE named one way."""

from __future__ import annotations

import argparse

from sae_lens_routing.cli.main import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_showing_its_default():
    for name, parser in subcommands().items():
        formatter = parser.formatter_class(prog=name)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and not action.required:
                assert "default" in formatter._get_help_string(action), f"{name} {action.option_strings}"
    dashboard = " ".join(subcommands()["dashboard"].format_help().split())
    assert "(default: top:24)" in dashboard and "(default: 64)" in dashboard


def test_every_command_names_the_sae_with_sae():
    """One way to name the SAE: `--sae DIR`, in upload as in evaluate, steer, dashboard and neuronpedia."""
    for name, parser in subcommands().items():
        positional = [a.dest for a in parser._actions if not a.option_strings]
        assert "path" not in positional, name
    for name in ("upload", "evaluate", "steer", "dashboard", "neuronpedia"):
        assert "--sae" in subcommands()[name]._option_string_actions, name
