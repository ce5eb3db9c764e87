"""The LLM judge: `openai` chat completions (OpenAI, Azure, any compatible server), each answer kept on disk.

Answers are stored under a hash of the request so a killed run resumes without paying twice; openai retries
429/5xx/time-outs itself. The API key is read from the environment and never stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from sae_lens_routing.atomic import atomic_write_json

AZURE_API_VERSION = "2024-10-21"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# USD per million tokens (input, output), for the printed estimate only.
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "gpt-4.1": (2.0, 8.0),
          "gpt-4.1-mini": (0.4, 1.6), "gpt-4.1-nano": (0.1, 0.4)}


@dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 6
    temperature: float = 0.1  # the official code's
    seed: int | None = 0

    def __post_init__(self) -> None:
        url = urlsplit(self.url)
        ok = url.scheme in ("http", "https") and url.netloc and self.model.strip() and self.concurrency >= 1
        if not ok or self.timeout_s <= 0 or self.max_retries < 0:
            raise ValueError(f"--judge-url an http(s) URL, --judge-model a name, concurrency >= 1, "
                             f"timeout_s > 0 and max_retries >= 0 expected, got {self}")


class JudgeError(ValueError):
    """The judge refused or kept failing: a ValueError, so the CLI reports it as one `error:` line."""


def estimated_cost(model: str, tokens_in: int, tokens_out: int) -> float | None:
    """USD at list price, or None for a model without a known price (a local server, a new model)."""
    price = PRICES.get(model.split("/")[-1])
    return None if price is None else (tokens_in * price[0] + tokens_out * price[1]) / 1e6


def format_cost(model: str, tokens_in: int, tokens_out: int) -> str:
    cost = estimated_cost(model, tokens_in, tokens_out)
    return f"${cost:.4f} at {model} list price" if cost is not None else f"unknown (no price for {model!r})"


def approx_tokens(messages: list[dict[str, str]]) -> int:
    """~4 characters a token: an estimate before anything is sent (no tokenizer for a remote model)."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


class Judge:
    """Answers from disk when stored, else from the judge; `usage` counts both (cached: paid before)."""

    def __init__(self, config: JudgeConfig, cache_dir: str | Path):
        self.config, self.cache_dir = config, Path(cache_dir)
        keys = ("requests", "cached", "tokens_in", "tokens_out", "cached_tokens_in", "cached_tokens_out")
        self.usage = dict.fromkeys(keys, 0)
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]], max_tokens: int, attempt: int = 0) -> str:
        cfg = self.config
        request = {"url": cfg.url, "model": cfg.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": cfg.temperature, "seed": cfg.seed, "attempt": attempt}
        key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        path = self.cache_dir / f"{key}.json"
        if stored := path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
        else:
            record = {"model": cfg.model, "messages": messages, **self._ask(messages, max_tokens, attempt)}
            atomic_write_json(path, record)
        prefix = "cached_" * stored
        with self._lock:
            self.usage["cached" if stored else "requests"] += 1
            self.usage[prefix + "tokens_in"] += record["usage"]["prompt_tokens"]
            self.usage[prefix + "tokens_out"] += record["usage"]["completion_tokens"]
        return record["content"]

    @cached_property
    def client(self) -> Any:
        import openai

        cfg = self.config
        key = os.environ.get(cfg.api_key_env)
        host = urlsplit(cfg.url).hostname or ""
        if not key and host not in LOCAL_HOSTS:
            raise ValueError(f"--api-key-env: environment variable {cfg.api_key_env} is not set (the key)")
        common = {"api_key": key or "unused", "timeout": cfg.timeout_s, "max_retries": cfg.max_retries}
        if host.endswith(".openai.azure.com"):
            parts = urlsplit(cfg.url)
            version = parse_qs(parts.query).get("api-version", [AZURE_API_VERSION])[0]
            endpoint = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            return openai.AzureOpenAI(azure_endpoint=endpoint, api_version=version, **common)
        return openai.OpenAI(base_url=cfg.url, **common)

    def _ask(self, messages: list[dict[str, str]], max_tokens: int, attempt: int) -> dict[str, Any]:
        import openai

        cfg = self.config
        # a second attempt at an unparsable answer gets another seed: the same one would repeat the answer
        extra = {"max_tokens": max_tokens, "temperature": cfg.temperature}
        extra.update({} if cfg.seed is None else {"seed": cfg.seed + attempt})
        try:
            reply = self.client.chat.completions.create(model=cfg.model, messages=messages, **extra)
        except openai.APIError as e:
            why = f"HTTP {e.status_code}" if isinstance(e, openai.APIStatusError) else type(e).__name__
            raise JudgeError(
                f"the judge at {cfg.url} refused the request with {why} (model {cfg.model!r}); check "
                f"--judge-url, --judge-model and the key in ${cfg.api_key_env}"
            ) from None
        content = (reply.choices[0].message.content if reply.choices else None) or ""  # none: unparsed
        usage = reply.usage
        tokens = {
            "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or approx_tokens(messages)),
            "completion_tokens": int(getattr(usage, "completion_tokens", 0) or len(content) // 4),
        }
        return {"content": content, "usage": tokens}
