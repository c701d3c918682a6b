"""A client model behind an OpenAI-compatible HTTP endpoint that the organisation runs itself.

An organisation may keep its expert model in a long-running server (``transformers serve FOLDER``,
vLLM, llama.cpp's server, Ollama) instead of loading it into the FedGRPO client process. This
module talks to such a server with the standard library only (``urllib``, ``json``): no torch, no
``openai`` package, so nothing here makes the client process heavier.

What the servers accept differs, and the requests are shaped for the strictest one:

* ``transformers serve`` rejects (HTTP 422) any field outside the OpenAI schema except
  ``generation_config``, ``seed`` and ``chat_template_kwargs``; it ignores ``n``, ``logprobs`` and
  ``echo``, and it decodes greedily unless ``generation_config`` (a JSON *string*) sets
  ``do_sample``. So one request per sample, each with its own seed, and sampling settings both as
  OpenAI fields (for the others) and inside ``generation_config`` (for it). Other servers ignore
  ``generation_config``.
* Prompt log-probabilities come from the legacy ``/completions`` with ``echo`` and ``logprobs``
  (vLLM). ``transformers serve`` and llama.cpp's server do not return them; that is reported as
  an :class:`EndpointError`, never as a score.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["EndpointError", "EndpointModel"]

_BODY_CHARS = 300  # how much of an unexpected reply an error message quotes
_NO_LOGPROBS_HINT = (
    "likelihood scoring needs an endpoint that returns prompt log-probabilities through "
    "/completions with echo=true and logprobs (vLLM does; transformers serve and llama.cpp's "
    "server do not): use clients.evaluation=agreement, or serve the model with vLLM"
)


class EndpointError(RuntimeError):
    """The endpoint could not be reached or gave an answer that cannot be used; names the URL.

    ``status`` is the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _snippet(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "..."


class EndpointModel:
    """One model on an OpenAI-compatible server, e.g. ``EndpointModel("http://127.0.0.1:8000/v1", name)``.

    ``model`` is the name the server expects in requests: for ``transformers serve FOLDER`` exactly
    the FOLDER argument it was started with, for vLLM its served model name. ``max_retries`` covers
    refused or dropped connections only (a server still starting, a restart); HTTP errors and
    timeouts are not retried, since repeating them would only multiply the wait.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        retry_wait_s: float = 0.5,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint base_url must start with http:// or https://, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_wait_s = retry_wait_s

    def __repr__(self) -> str:  # never print the key
        return f"EndpointModel({self.base_url!r}, model={self.model!r})"

    # -- public -------------------------------------------------------------------------------

    def health(self) -> list[str]:
        """The model ids the server lists at ``GET /models``; raises EndpointError when it cannot.

        Meant as a start-up check, so a wrong URL, a server that is not running or a bad key fails
        at once and clearly rather than at the first question. The list is informational:
        ``transformers serve`` lists cached hub models, and only from 5.24 on the local folder it serves.
        """
        try:
            data = self._request("GET", "/models")
        except EndpointError as err:
            if err.status is None or err.status < 500:
                raise
            # transformers serve lists models by scanning the Hugging Face cache, and fails with
            # HTTP 500 when that folder does not exist, even though it serves its model fine.
            raise EndpointError(
                f"{err} (transformers serve answers 500 here when the Hugging Face cache folder is "
                "missing: create it, or point HF_HUB_CACHE at an existing folder)",
                err.status,
            ) from err
        models = data.get("data")
        if not isinstance(models, list):
            raise EndpointError(
                f"GET {self._url('/models')}: reply has no 'data' list: {_snippet(str(data))}"
            )
        return [str(m.get("id")) for m in models if isinstance(m, dict) and "id" in m]

    def sample(
        self, messages: list[dict[str, str]], n: int, temperature: float, max_tokens: int, seed: int
    ) -> list[str]:
        """``n`` completions of the chat ``messages``: one request each, with seeds seed, seed+1, ...

        ``temperature <= 0`` decodes greedily. One request per sample because ``transformers
        serve`` ignores ``n``; per-sample seeds keep the samples reproducible on servers that
        honour ``seed`` (``transformers serve`` and vLLM do).
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        sampled = temperature > 0
        generation: dict[str, Any] = {"do_sample": sampled, "max_new_tokens": max_tokens}
        if sampled:  # plain temperature sampling, as the in-process ModelEvaluator does
            generation.update(temperature=temperature, top_k=0, top_p=1.0)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature if sampled else 0.0,
            "top_p": 1.0,
            "generation_config": json.dumps(generation),
        }
        texts = []
        for i in range(n):
            data = self._request("POST", "/chat/completions", {**body, "seed": seed + i})
            texts.append(self._chat_content(data))
        return texts

    def answer_logprobs(self, prompt: str, continuation: str) -> list[float]:
        """Per-token log-probabilities of ``continuation`` read after ``prompt`` (raw text, no template).

        Uses ``/completions`` with ``echo=true, logprobs=1, max_tokens=1``: the reply lists the
        prompt's tokens with their log-probabilities, then the one generated token. The
        continuation's tokens are the last prompt tokens whose strings cover its length, counted
        back from the end of the prompt: ``text_offset`` is only the running length of the token
        strings, which drifts from the text wherever a token's string differs from its text (a
        special token such as ``<|im_start|>``, a partial UTF-8 character), and the prompt's start
        is where those sit. A token straddling the boundary counts as the continuation's.
        ``max_tokens=1``, not 0: vLLM rejects 0 and transformers serve fails on it with HTTP 500.
        """
        if not continuation:
            raise ValueError("continuation must not be empty")
        url = self._url("/completions")
        body = {
            "model": self.model,
            "prompt": prompt + continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        try:
            data = self._request("POST", "/completions", body)
        except EndpointError as err:
            if err.status is None:  # not reachable: nothing to say about log-probabilities
                raise
            raise EndpointError(f"{err}; {_NO_LOGPROBS_HINT}", err.status) from err
        logprobs = self._first_choice(data, url).get("logprobs")
        if not isinstance(logprobs, dict) or not logprobs.get("token_logprobs"):
            raise EndpointError(f"POST {url}: the endpoint offers no log-probabilities; {_NO_LOGPROBS_HINT}")
        tokens, values = logprobs.get("tokens"), logprobs["token_logprobs"]
        if (
            not isinstance(tokens, list)
            or not isinstance(values, list)
            or len(tokens) != len(values)
            or not all(isinstance(t, str) for t in tokens)
        ):
            raise EndpointError(
                f"POST {url}: logprobs need matching 'tokens' and 'token_logprobs' lists: "
                f"{_snippet(json.dumps(logprobs))}"
            )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_count = usage.get("prompt_tokens")
        if not isinstance(prompt_count, int):
            prompt_count = len(tokens) - 1  # all but the one generated token
        if not 1 <= prompt_count <= len(tokens):
            raise EndpointError(
                f"POST {url}: the endpoint did not echo the prompt: log-probabilities for "
                f"{len(tokens)} token(s), the prompt has {prompt_count}; {_NO_LOGPROBS_HINT}"
            )
        picked: list[float] = []
        covered = 0
        for i in range(prompt_count - 1, -1, -1):
            value = values[i]
            if not isinstance(value, int | float):
                raise EndpointError(
                    f"POST {url}: continuation token {i} ({tokens[i]!r}) has no log-probability"
                )
            picked.append(float(value))
            covered += len(tokens[i])
            if covered >= len(continuation):
                break
        else:
            raise EndpointError(
                f"POST {url}: the echoed prompt's tokens do not cover the continuation: "
                f"{_snippet(json.dumps(logprobs))}"
            )
        return picked[::-1]

    # -- internals ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _chat_content(self, data: dict[str, Any]) -> str:
        url = self._url("/chat/completions")
        message = self._first_choice(data, url).get("message")
        if not isinstance(message, dict) or "content" not in message:
            raise EndpointError(f"POST {url}: choice has no message content: {_snippet(json.dumps(data))}")
        content = message["content"]
        if content is None:  # e.g. a reply that is all reasoning: no answer text at all
            return ""
        if not isinstance(content, str):
            raise EndpointError(f"POST {url}: message content is not text: {_snippet(json.dumps(data))}")
        return content

    @staticmethod
    def _first_choice(data: dict[str, Any], url: str) -> dict[str, Any]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise EndpointError(f"POST {url}: reply has no choices: {_snippet(json.dumps(data))}")
        return choices[0]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON request, retried on refused or dropped connections; every failure an EndpointError."""
        url = self._url(path)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        where = f"{method} {url}"
        attempt = 0
        while True:
            request = urllib.request.Request(url, data=payload, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as err:
                detail = _snippet(err.read() or b"")
                hint = ""
                if err.code in (401, 403):
                    hint = " (check the endpoint's api_key)"
                elif err.code == 404:
                    hint = " (does base_url end in /v1, and is the model name right?)"
                raise EndpointError(
                    f"{where}: HTTP {err.code} {err.reason}{hint}: {detail}", err.code
                ) from None
            except TimeoutError:
                raise EndpointError(f"{where}: no reply within {self.timeout_s:g} s") from None
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, TimeoutError):
                    raise EndpointError(f"{where}: no reply within {self.timeout_s:g} s") from None
                if attempt >= self.max_retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise EndpointError(
                        f"{where}: cannot connect{tries} ({reason}); is the endpoint running?"
                    ) from None
                time.sleep(self.retry_wait_s * 2**attempt)
                attempt += 1
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(f"{where}: reply is not JSON: {_snippet(raw)}") from None
        if not isinstance(data, dict):
            raise EndpointError(f"{where}: reply is not a JSON object: {_snippet(raw)}")
        return data
