"""CLI commands, one module each (see `sae_lens_routing.cli.main`)."""
