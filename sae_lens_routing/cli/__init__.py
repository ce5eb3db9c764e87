"""`python -m sae_lens_routing <command>`: the argument parser (`main.py`) and one module per command."""
