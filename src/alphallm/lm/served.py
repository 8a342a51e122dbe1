"""A model behind an OpenAI-compatible ``/v1/completions`` server, as vLLM and ``alphallm serve`` give one.

``--model http://host:8000/v1`` (or ``http://host:8000/v1#served-name`` when the server holds several
models) samples options and scores continuations over HTTP, so a search or an evaluation can use a
GPU inference engine that holds the model in another process or on another machine. The engine does
its own batching and prefix caching; this client sends each batch of states as a few requests at once.

What the server must give (vLLM does): per-token log-probs of the sampled tokens before temperature
(vLLM's default ``logprobs_mode``; eta-MCTS priors and the implicit-Q critic read them at temperature
1), ``include_stop_str_in_output``, and ``echo`` with ``max_tokens: 0`` for scoring. ``stop_reason``
(vLLM's) tells a stop string from the end of text; without it a text that ends with a stop string is
taken as stopped there. Token ids come from ``return_token_ids``, or from vLLM's ``token_id:<n>`` tokens
(``return_tokens_as_token_ids``) on versions before it.

Compute is counted from the server's ``usage``: its prompt tokens (each prompt once, however many
samples) less those its prefix cache held where it reports them (vLLM's ``prompt_tokens_details``,
with ``--enable-prompt-tokens-details``), and its completion tokens. Forward passes are the server's
business and are not counted.

A seeded call sends each request its own seed. vLLM seeds every prompt of a request alike, so two
identical states in one call with the same number of samples get the same samples.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alphallm.errors import UserError
from alphallm.lm.base import Completion, Usage, sample_counts

__all__ = ["ServedLM", "is_served", "pin_served"]

PROMPTS_PER_REQUEST = 64  # a batch's states go out in requests of at most this many prompts
RETRIES = (1.0, 4.0)  # seconds before each retry of a request the server could not take


def is_served(name: object) -> bool:
    """True for a model named by its server's URL."""
    return isinstance(name, str) and name.startswith(("http://", "https://"))


def pin_served(name: str) -> str:
    """A served model's URL with the model its server holds now named after '#' (``URL#<model id>``);
    ``URL#model`` as it is. Another model served at the same address later (vLLM serves one per port) is
    then another name: another results file, record and resume fingerprint."""
    if "#" in name:
        return name
    return f"{name}#{ServedLM(name).model}"


class ServedLM:
    """``LanguageModel`` over HTTP. ``name`` is ``<url>`` or ``<url>#<model>``; a URL without ``/v1``
    gets it. The API key, where the server wants one, comes from ``OPENAI_API_KEY``. ``timeout``: the
    seconds a request may take (a batch of long solutions on a loaded server takes minutes)."""

    def __init__(self, name: str, *, timeout: float = 1800.0, concurrency: int = 8) -> None:
        url, _, model = name.partition("#")
        url = url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.name = name
        self.timeout = timeout
        self.concurrency = concurrency
        self.usage = Usage()
        self.model = self._served_model(model)

    # -- the contract ---------------------------------------------------------------------------
    def sample(
        self,
        states: Sequence[str],
        *,
        n: int | Sequence[int] = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        max_tokens: int = 64,
        seed: int | None = None,
    ) -> list[list[Completion]]:
        counts = sample_counts(states, n, max_tokens)
        self.usage.calls += 1
        stop = list(stop)
        # vLLM refuses n > 1 when greedy, and every greedy sample of a state is the same: ask once.
        wire = [1 if temperature <= 0 else count for count in counts]
        # One request holds prompts with one n: states group by their count, in their order.
        groups: dict[int, list[int]] = {}
        for i, count in enumerate(wire):
            groups.setdefault(count, []).append(i)
        requests = [
            (count, members[start : start + PROMPTS_PER_REQUEST])
            for count, members in groups.items()
            for start in range(0, len(members), PROMPTS_PER_REQUEST)
        ]
        bodies = [
            {
                "model": self.model,
                "prompt": [states[i] for i in members],
                "n": count,
                "temperature": float(temperature),
                "top_p": float(top_p),
                "max_tokens": int(max_tokens),
                "stop": stop,
                "logprobs": 0,
                "include_stop_str_in_output": True,
                "return_token_ids": True,
                "return_tokens_as_token_ids": True,  # vLLM before return_token_ids: ids in the tokens
                # Each request its own seed, so that a seeded call samples the same whatever the order.
                **({"seed": int(seed) + k} if seed is not None else {}),
            }
            for k, (count, members) in enumerate(requests)
        ]
        out: list[list[Completion]] = [[] for _ in states]
        for (count, members), reply in zip(requests, self._post_all("completions", bodies)):
            choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
            if len(choices) != count * len(members):
                raise UserError(
                    f"{self.name}: the server returned {len(choices)} completions for "
                    f"{len(members)} prompts × {count}"
                )
            for k, i in enumerate(members):
                out[i] = [_completion(c, stop) for c in choices[k * count : (k + 1) * count]]
                if counts[i] > count:  # greedy: the one completion, as many times as asked
                    one = out[i][0]
                    out[i] = [
                        Completion(one.text, list(one.token_ids), list(one.logprobs), one.finish_reason)
                        for _ in range(counts[i])
                    ]
            self._count(reply)
        return out

    def logprobs(self, states: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        if len(states) != len(continuations):
            raise ValueError("states and continuations must have the same length")
        self.usage.calls += 1
        pairs = list(zip(states, continuations))
        chunks = [pairs[s : s + PROMPTS_PER_REQUEST] for s in range(0, len(pairs), PROMPTS_PER_REQUEST)]
        bodies = [
            {
                "model": self.model,
                "prompt": [s + c for s, c in chunk],
                "max_tokens": 0,  # vLLM: echo the prompt with its log-probs, generate nothing
                "echo": True,
                "logprobs": 0,
                "temperature": 1.0,
            }
            for chunk in chunks
        ]
        out: list[list[float]] = []
        for chunk, reply in zip(chunks, self._post_all("completions", bodies)):
            choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
            if len(choices) != len(chunk):
                raise UserError(
                    f"{self.name}: the server returned {len(choices)} scores for {len(chunk)} texts"
                )
            out.extend(_continuation_logprobs(choice, c, self.name) for choice, (_, c) in zip(choices, chunk))
            self._count(reply)
        return out

    # -- HTTP -----------------------------------------------------------------------------------
    def _served_model(self, wanted: str) -> str:
        """``wanted``, or the server's only model where none is named; checked against the server's
        list, so that a wrong name or a dead server is one line before any work."""
        listed = [str(m["id"]) for m in self._request("models", None).get("data", []) if m.get("id")]
        names = ", ".join(listed) or "none"
        if wanted and wanted not in listed:
            raise UserError(f"{self.name}: the server holds no model {wanted!r} (it holds: {names})")
        if not wanted and len(listed) != 1:
            raise UserError(
                f"{self.name}: the server holds {len(listed)} models ({names}); name one: {self.name}#<model>"
            )
        return wanted or listed[0]

    def _count(self, reply: dict[str, Any]) -> None:
        """The server's usage: prompt tokens less those its prefix cache held (where it says), and
        completion tokens."""
        usage = reply.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        self.usage.prefill_tokens += int(usage.get("prompt_tokens", 0)) - int(cached)
        self.usage.generated_tokens += int(usage.get("completion_tokens", 0))

    def _post_all(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(bodies) == 1:
            return [self._request(path, bodies[0])]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(lambda body: self._request(path, body), bodies))

    def _request(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One GET (no body) or POST, retried when the server is busy or the connection drops."""
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.base_url}/{path}"
        for wait in (*RETRIES, None):
            request = urllib.request.Request(url, data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read())
                if not isinstance(reply, dict):
                    raise UserError(f"{url}: the server's reply is not a JSON object")
                return reply
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 502, 503, 504) and wait is not None:
                    time.sleep(wait)
                    continue
                raise UserError(
                    f"{url}: the server refused the request ({exc.code}: {_error_message(exc)})"
                ) from None
            except TimeoutError:  # the server took the request and is slow: sending it again adds load
                raise UserError(f"{url}: no answer within {self.timeout:g} s") from None
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
                if wait is not None:
                    time.sleep(wait)
                    continue
                reason = getattr(exc, "reason", exc)
                raise UserError(f"{url}: cannot reach the server ({reason})") from None
            except ValueError:  # not JSON, or not text
                raise UserError(
                    f"{url}: the server's reply is not JSON (is this an OpenAI-compatible server?)"
                ) from None
        raise AssertionError("unreachable")


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The message of an error reply, in vLLM's and OpenAI's shapes, on one line."""
    try:
        reply = json.loads(exc.read() or b"{}")
    except (json.JSONDecodeError, OSError):
        return str(exc.reason)
    error = reply.get("error", reply) if isinstance(reply, dict) else {}
    message = error.get("message") if isinstance(error, dict) else error
    return " ".join(str(message or exc.reason).split())[:300]


def _completion(choice: dict[str, Any], stop: list[str]) -> Completion:
    """Our ``Completion`` from one choice: the text ends with its stop string, EOS told from a stop."""
    text = str(choice.get("text") or "")
    logprobs = choice.get("logprobs") or {}
    token_logprobs = [float(x) for x in logprobs.get("token_logprobs") or [] if x is not None]
    token_ids = choice.get("token_ids")
    if token_ids is None:  # a server without return_token_ids: the tokens, as many as log-probs
        token_ids = [_token_id(t) for t in logprobs.get("tokens") or []]
    finish = choice.get("finish_reason")
    if finish not in ("stop", "length"):  # vLLM's "abort", OpenAI's "content_filter": not a text to search on
        raise UserError(f"the server ended a completion with finish_reason {finish!r}")
    if finish == "length":
        return Completion(text, list(token_ids), token_logprobs, "length")
    reason = choice.get("stop_reason", "")
    matched = reason if isinstance(reason, str) and reason in stop else None
    if reason == "":  # no stop_reason at all (not vLLM): a text ending with a stop string stopped there
        matched = next((s for s in stop if text.endswith(s)), None)
    if matched is None:
        return Completion(text, list(token_ids), token_logprobs, "eos")
    if not text.endswith(matched):  # a server that left the stop string out of the text
        text += matched
    return Completion(text, list(token_ids), token_logprobs, "stop")


def _token_id(token: str) -> int:
    """vLLM's ``token_id:<n>`` form (``return_tokens_as_token_ids``); -1 where a token is only text."""
    number = token.removeprefix("token_id:") if isinstance(token, str) else ""
    return int(number) if number.isdigit() and number != token else -1


def _continuation_logprobs(choice: dict[str, Any], continuation: str, name: str) -> list[float]:
    """The echoed log-probs of the fewest last tokens whose text covers ``continuation`` (a token that
    spans the boundary with the state belongs to the continuation, as ``encode_pair`` has it)."""
    logprobs = choice.get("logprobs") or {}
    tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    if len(tokens) != len(values) or (continuation and not tokens):
        raise UserError(f"{name}: the server echoed no log-probs (does it take echo with max_tokens 0?)")
    covered, first = 0, len(tokens)
    while covered < len(continuation) and first > 0:
        first -= 1
        covered += len(tokens[first])
    picked = values[first:]
    if any(v is None for v in picked):  # the text's first token, which has no context
        raise UserError(f"{name}: no log-prob for a continuation's first token (an empty state?)")
    return [float(v) for v in picked]
