"""``alphallm serve``: one local model behind the OpenAI-compatible ``/v1/completions`` API, as vLLM
serves it, so that searches in other processes or on other machines can share it (``lm/served.py``).

It takes what our searches send a vLLM server: text prompts (one or a list), ``n``, ``temperature``,
``top_p``, ``max_tokens``, ``stop``, ``seed``, ``logprobs`` (the sampled token's log-prob only, before
temperature, as vLLM's default), ``echo`` with ``max_tokens: 0`` (scoring), and vLLM's
``include_stop_str_in_output`` and ``return_token_ids``; replies carry vLLM's ``stop_reason`` and
``usage``. Requests run one at a time on the model, each batched whole (every prompt and sample at
once) with the backend's prefix KV reuse. It is a plain HTTP server for a trusted network: no
authentication, no streaming, no chat endpoint.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alphallm.errors import UserError
from alphallm.lm.hf import TransformersLM

__all__ = ["CompletionServer", "make_server"]


class RequestError(Exception):
    """A request the server refuses: its HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CompletionServer:
    """The API's logic on one ``TransformersLM``, apart from HTTP (``make_server`` wires it)."""

    def __init__(self, lm: TransformersLM, name: str) -> None:
        self.lm, self.name = lm, name
        self.lock = threading.Lock()  # the backend (its prefix store, its usage) serves one call at a time

    def models(self) -> dict[str, Any]:
        card = {
            "id": self.name,
            "object": "model",
            "owned_by": "alphallm",
            "max_model_len": self.lm.max_positions,
        }
        return {"object": "list", "data": [card]}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("model") not in (None, self.name):
            raise RequestError(404, f"The model `{body.get('model')}` does not exist.")
        prompts = _prompts(body.get("prompt"))
        n = _number(body, "n", 1, int, low=1)
        max_tokens = _number(body, "max_tokens", 16, int, low=0)
        temperature = _number(body, "temperature", 1.0, float, low=0.0)
        top_p = _number(body, "top_p", 1.0, float, low=0.0)
        if temperature > 2.0 or not 0.0 < top_p <= 1.0:
            raise RequestError(400, "temperature must be in [0, 2] and top_p in (0, 1]")
        if temperature < 1e-5 and n > 1:  # vLLM's rule: greedy samples would all be the same
            raise RequestError(400, f"n must be 1 when using greedy sampling, got {n}.")
        logprobs = body.get("logprobs")
        if logprobs is not None and (not isinstance(logprobs, int) or logprobs < 0):
            raise RequestError(400, "logprobs must be a non-negative integer")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise RequestError(400, "stop must be a string or a list of non-empty strings")
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise RequestError(400, "seed must be an integer")
        echo = bool(body.get("echo"))
        if max_tokens == 0 and not echo:
            raise RequestError(400, "max_tokens must be at least 1 (0 only with echo)")
        if echo and max_tokens > 0:
            raise RequestError(400, "echo is served with max_tokens 0 only (scoring a text)")
        try:
            with self.lock:
                encoded_before = self.lm.usage.prefill_tokens
                if echo:
                    choices, prompt_tokens, completion_tokens = self._echo(prompts, logprobs is not None)
                else:
                    choices, prompt_tokens, completion_tokens = self._sample(
                        prompts, body, n, temperature, top_p, stop, max_tokens, seed, logprobs is not None
                    )
                encoded = self.lm.usage.prefill_tokens - encoded_before
        except UserError as exc:  # a prompt longer than the model's positions
            raise RequestError(400, str(exc)) from None
        # The prompt tokens whose KV came from the prefix store, as vLLM reports its prefix cache's.
        cached = {"cached_tokens": max(0, prompt_tokens - encoded)}
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        usage |= {"total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": cached}
        return {
            "id": f"cmpl-{time.time_ns()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": usage,
        }

    def _sample(
        self,
        prompts: list[str],
        body: dict[str, Any],
        n: int,
        temperature: float,
        top_p: float,
        stop: list[str],
        max_tokens: int,
        seed: int | None,
        with_logprobs: bool,
    ) -> tuple[list[dict[str, Any]], int, int]:
        results = self.lm.sample(
            prompts, n=n, temperature=temperature, top_p=top_p, stop=stop, max_tokens=max_tokens, seed=seed
        )
        keep_stop = bool(body.get("include_stop_str_in_output"))
        choices: list[dict[str, Any]] = []
        for completions in results:
            for c in completions:
                matched = (
                    next((s for s in stop if c.text.endswith(s)), None) if c.finish_reason == "stop" else None
                )
                text = c.text if keep_stop or matched is None else c.text[: -len(matched)]
                choice: dict[str, Any] = {
                    "index": len(choices),
                    "text": text,
                    "logprobs": self._logprobs(c.token_ids, c.logprobs) if with_logprobs else None,
                    "finish_reason": "length" if c.finish_reason == "length" else "stop",
                    "stop_reason": matched,
                }
                if body.get("return_token_ids"):
                    choice["token_ids"] = list(c.token_ids)
                choices.append(choice)
        prompt_tokens = sum(len(self.lm.encode(p)) for p in prompts)
        return choices, prompt_tokens, sum(c.num_tokens for cs in results for c in cs)

    def _echo(self, prompts: list[str], with_logprobs: bool) -> tuple[list[dict[str, Any]], int, int]:
        """Each prompt's tokens and their log-probs (none for the first, which has no context)."""
        scored = self.lm.echo(prompts)
        choices = [
            {
                "index": i,
                "text": prompt,
                "logprobs": self._logprobs(ids, values) if with_logprobs else None,
                "finish_reason": "length",
                "stop_reason": None,
            }
            for i, (prompt, (ids, values)) in enumerate(zip(prompts, scored))
        ]
        return choices, sum(len(ids) for ids, _ in scored), 0

    def _logprobs(self, token_ids: Sequence[int], values: Sequence[float | None]) -> dict[str, Any]:
        tokens = [self.lm.piece(t) for t in token_ids]
        offsets = [0, *itertools.accumulate(len(t) for t in tokens)][: len(tokens)]
        top = [None if v is None else {t: v} for t, v in zip(tokens, values)]
        return {"tokens": tokens, "token_logprobs": list(values), "top_logprobs": top, "text_offset": offsets}


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    raise RequestError(
        400, "prompt must be a string or a non-empty list of strings (token ids are not taken)"
    )


def _number(body: dict[str, Any], key: str, default: Any, kind: type, *, low: float) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not isinstance(value, int))
    ):
        raise RequestError(400, f"{key} must be a number" + (" (an integer)" if kind is int else ""))
    if value < low:
        raise RequestError(400, f"{key} must be at least {low}")
    return kind(value)


def make_server(
    lm: TransformersLM, name: str, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call ``serve_forever``) for ``lm`` under the model id ``name``;
    port 0 picks a free one (``server.server_address``)."""
    api = CompletionServer(lm, name)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._reply(200, api.models())
            elif self.path.rstrip("/") == "/health":
                self._reply(200, {})
            else:
                self._reply(404, _error(404, f"no such endpoint: GET {self.path}"))

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/completions":
                self._reply(404, _error(404, f"no such endpoint: POST {self.path}"))
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                if not isinstance(body, dict):
                    raise RequestError(400, "the request body must be a JSON object")
                self._reply(200, api.complete(body))
            except json.JSONDecodeError:
                self._reply(400, _error(400, "the request body is not JSON"))
            except RequestError as exc:
                self._reply(exc.status, _error(exc.status, str(exc)))
            except Exception as exc:  # a bug: the client gets a reply that names it, not a dropped connection
                self._reply(500, _error(500, f"{type(exc).__name__}: {exc}"))

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the terminal during a search

    return ThreadingHTTPServer((host, port), Handler)


def _error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return {"error": {"message": message, "type": kind, "code": status}}
