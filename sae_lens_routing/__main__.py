import sys

from sae_lens_routing.cli.main import cli

sys.exit(cli())
