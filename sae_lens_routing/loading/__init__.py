"""Loading saved routed SAEs: SAELens converters checked once, the official format, named releases."""
