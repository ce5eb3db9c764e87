"""The LLM judge: chat completions through the `openai` package, each answer stored on disk as it arrives.

One client covers OpenAI, Azure OpenAI (a `*.openai.azure.com` URL; `?api-version=` in the URL, the model being
the deployment name) and any OpenAI-compatible server (vLLM, llama.cpp, Ollama, OpenRouter) at `url`.

A response is stored under a hash of everything that determines it (endpoint, model, messages, sampling
parameters, seed, attempt), written atomically the moment it arrives, so an interrupted run resumes without
paying twice for an answer it already has. Retries (429 honouring Retry-After, 5xx, time-outs, dropped
connections) back off exponentially; any other refusal (a bad key, an unknown model) stops the run at once.
The API key is read from the environment and handed to the client only: it is never stored, printed or hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from sae_lens_routing.atomic import atomic_write_json

AZURE_API_VERSION = "2024-10-21"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# USD per million tokens (input, output), for the printed estimate only.
PRICES = {
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
}


@dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    temperature: float = 0.1  # the official code's
    seed: int | None = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--judge-url must be an http(s) URL, got {self.url!r}")
        if not self.model.strip():
            raise ValueError("--judge-model must name the judge model (or the Azure deployment)")
        if self.concurrency < 1 or self.timeout_s <= 0 or self.max_retries < 0:
            raise ValueError(
                f"judge concurrency >= 1, timeout_s > 0, max_retries >= 0 expected, got "
                f"{self.concurrency}, {self.timeout_s}, {self.max_retries}"
            )

    @property
    def is_azure(self) -> bool:
        return (urlsplit(self.url).hostname or "").endswith(".openai.azure.com")

    @property
    def is_local(self) -> bool:
        return urlsplit(self.url).hostname in LOCAL_HOSTS


@dataclass
class Usage:
    """Tokens of this run's requests (sent) and of answers found on disk (paid before, not again)."""

    requests: int = 0
    cached: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cached_tokens_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "lock"}


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


class JudgeError(ValueError):
    """The judge refused in a way retrying cannot fix, or kept failing past the retries: a ValueError, so the
    CLI reports it as one `error:` line (a wrong URL, model or key is the user's to fix, not a bug)."""


class Judge:
    def __init__(self, config: JudgeConfig, cache_dir: str | Path):
        self.config = config
        self.cache_dir = Path(cache_dir)
        self.usage = Usage()
        self._client: Any = None
        self._client_lock = threading.Lock()

    def key(self, messages: list[dict[str, str]], max_tokens: int, attempt: int) -> str:
        request = {
            "url": self.config.url,
            "model": self.config.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.config.temperature,
            "seed": self.config.seed,
            "attempt": attempt,
        }
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    def complete(self, messages: list[dict[str, str]], max_tokens: int, attempt: int = 0) -> str:
        """The answer's text: from disk when stored, else from the judge (then stored at once)."""
        key = self.key(messages, max_tokens, attempt)
        path = self.cache_dir / f"{key}.json"
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            with self.usage.lock:
                self.usage.cached += 1
                self.usage.cached_tokens_in += stored["usage"]["prompt_tokens"]
                self.usage.cached_tokens_out += stored["usage"]["completion_tokens"]
            return stored["content"]
        content, usage = self._request(messages, max_tokens, attempt)
        record = {"model": self.config.model, "messages": messages, "content": content, "usage": usage}
        atomic_write_json(path, record)
        with self.usage.lock:
            self.usage.requests += 1
            self.usage.tokens_in += usage["prompt_tokens"]
            self.usage.tokens_out += usage["completion_tokens"]
        return content

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import openai

        cfg = self.config
        key = os.environ.get(cfg.api_key_env)
        if not key:
            if not cfg.is_local:
                raise ValueError(
                    f"--api-key-env: environment variable {cfg.api_key_env} is not set (it must hold the "
                    f"judge's API key; keys are read from the environment only)"
                )
            key = "unused"  # a local server without authentication; the client needs some string
        common = {"api_key": key, "timeout": cfg.timeout_s, "max_retries": 0}
        if cfg.is_azure:
            parts = urlsplit(cfg.url)
            version = parse_qs(parts.query).get("api-version", [AZURE_API_VERSION])[0]
            endpoint = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            return openai.AzureOpenAI(azure_endpoint=endpoint, api_version=version, **common)
        return openai.OpenAI(base_url=cfg.url, **common)

    def _request(
        self, messages: list[dict[str, str]], max_tokens: int, attempt: int
    ) -> tuple[str, dict[str, int]]:
        import openai

        cfg = self.config
        # a second attempt at an unparsable answer gets another seed: the same one would repeat the answer
        extra = {} if cfg.seed is None else {"seed": cfg.seed + attempt}
        for retry in range(cfg.max_retries + 1):
            wait = min(cfg.max_backoff_s, cfg.backoff_s * 2**retry) * (0.5 + random.random() / 2)
            try:
                reply = self.client().chat.completions.create(
                    model=cfg.model,
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=cfg.temperature,
                    **extra,
                )
                content = reply.choices[0].message.content if reply.choices else None
                if content is None:
                    raise JudgeError(f"the judge {cfg.model!r} returned no message content")
                usage = reply.usage
                tokens = {
                    "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or approx_tokens(messages)),
                    "completion_tokens": int(getattr(usage, "completion_tokens", 0) or len(content) // 4),
                }
                return content, tokens
            except openai.RateLimitError as e:
                wait = max(wait, _retry_after(e.response))
                error: Exception = e
            except openai.APIStatusError as e:
                if e.status_code < 500:
                    raise JudgeError(
                        f"the judge at {cfg.url} refused the request with HTTP {e.status_code} "
                        f"(model {cfg.model!r}); check --judge-url, --judge-model and the key in "
                        f"${cfg.api_key_env}"
                    ) from None
                error = e
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                error = e
            if retry < cfg.max_retries:
                time.sleep(wait)
        raise JudgeError(
            f"the judge at {cfg.url} failed {cfg.max_retries + 1} times; last: {type(error).__name__}"
        )


def _retry_after(response: Any) -> float:
    """Seconds from a Retry-After header (a number of seconds), 0 when absent or a date."""
    try:
        return float(response.headers.get("retry-after", 0))
    except (TypeError, ValueError):
        return 0.0
