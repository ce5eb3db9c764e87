"""Loading saved routed SAEs: file integrity checks, SAELens converters, the official format, named releases."""
