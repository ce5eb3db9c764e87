"""Offline model and corpora shipped in data wheels (SmolLM2 GGUF, BBC News, python-topics)."""
