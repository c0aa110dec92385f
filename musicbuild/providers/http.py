"""HTTP for hosted providers: rate limit, retries and error mapping in one place (SPEC 5).

Every request of a provider (creates, polls, downloads) goes through its ``ProviderHTTP``:

- a sliding-window limiter keeps at most ``requests_per_minute`` requests in any 60 s window;
- 429 pauses the whole provider for ``Retry-After`` (or a backoff) and repeats the request, which is
  safe even for creates because a 429 was not processed;
- 5xx and network errors on reads are retried with capped exponential backoff and full jitter;
- a create is re-sent only when it provably never reached the service (connection refused) or when
  the service honours an idempotency key; a create that may have arrived (no answer, any 5xx) raises
  ``AmbiguousCreate``; just before a create's bytes leave, the task's ``create_hook`` runs (the
  executor journals ``sent`` there, so an intent found after a crash provably never left);
- 401/402/403 become ``ProviderAuthError`` naming the environment variable (never the key), other
  4xx a ``ProviderError`` carrying the service's own message and its HTTP status;
- result files (CDN hosts) are fetched without the API key and their 403/404 are never taken for
  an authentication failure.
"""
from __future__ import annotations

import contextvars
import json
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

import httpx

from ..clock import Clock
from ..errors import AmbiguousCreate, ProviderAuthError, ProviderError
from ..redact import redact
from .ratelimit import RateLimiter

# When this task's last request got its slot: what a poll observed is true as of then, however long
# the rate limiter made the request wait before (polling learns latencies from it).
last_sent: contextvars.ContextVar[float] = contextvars.ContextVar("last_sent", default=0.0)

# Runs right before a create request of this task is sent (after its rate slot): the executor
# journals the job as "sent" there. Until then, giving up proves the service never saw it.
create_hook: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("create_hook", default=None)

# Requests this task had to repeat (429, 5xx, network): a job that needed them is "flaky" in reports.
retries: contextvars.ContextVar[int] = contextvars.ContextVar("retries", default=0)

READ_RETRIES = 6
BACKOFF_BASE, BACKOFF_CAP = 1.0, 30.0
DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)  # a synchronous create may take minutes


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff (seconds) for retry number ``attempt`` (1-based)."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))


def retry_after(response: httpx.Response, attempt: int, scale: float = 1.0) -> float:
    """Seconds to wait: ``Retry-After`` as delta-seconds or as an HTTP date (RFC 9110), else a backoff.

    A date is a wall-clock instant, so its distance from now is real time: divided by ``scale`` it
    becomes the scheduler's (virtual) seconds."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) / scale
    except (TypeError, ValueError, IndexError, OverflowError):
        return backoff(attempt) + 1.0


def service_message(response: httpx.Response) -> str:
    """The service's own words from any of the error shapes the providers use."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip()
        return text[:300] or response.reason_phrase
    parts = []
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            parts += [str(err.get(k)) for k in ("code", "type", "message") if err.get(k)]
            if isinstance(err.get("details"), dict):
                parts.append(json.dumps(err["details"], sort_keys=True))
        elif err:
            parts.append(str(err))
        if isinstance(body.get("message"), str) and body.get("message") not in parts:
            parts.append(body["message"])
    elif isinstance(body, str):
        parts.append(body)
    return ": ".join(dict.fromkeys(parts)) or response.reason_phrase


class ProviderHTTP:
    def __init__(self, name: str, type_name: str, base_url: str, key_env: str | None,
                 env: Mapping[str, str], limiter: RateLimiter, client: httpx.AsyncClient, clock: Clock) -> None:
        self.name, self.type_name = name, type_name
        base = base_url.rstrip("/")
        # the docs give base URLs both with and without the version; adapters write "/v1/..." paths
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.key_env = key_env
        self.env = env
        self.limiter = limiter
        self.client = client
        self.clock = clock

    def _key(self) -> str:
        return self.env.get(self.key_env or "", "").strip()  # a pasted key often ends in a newline

    def auth_headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def redact(self, text: str) -> str:
        """Services sometimes quote the key they rejected, raw or encoded: never let it into a message."""
        return redact(text, self.env, {self._key(): f"${self.key_env}"})

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    async def request(self, method: str, path: str, *, create: bool = False, idempotent: bool = False,
                      auth: bool = True, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """Send with limits and retries; return a 2xx/3xx response or one whose status is in ``ok``."""
        headers = {**(self.auth_headers() if auth else {}), **kwargs.pop("headers", {})}
        attempt = 0
        while True:
            attempt += 1
            slot = await self.limiter.acquire()
            last_sent.set(self.clock.now())
            hook = create_hook.get() if create else None
            if hook is not None:
                try:
                    hook()  # journal "sent" (fsynced) before any byte leaves
                except BaseException:
                    self.limiter.release(slot)
                    raise
            try:
                try:
                    response = await self.client.request(method, self.url(path), headers=headers, **kwargs)
                finally:
                    self.limiter.release(slot)  # also on errors and cancellation: never leave a slot taken
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                # refused by our own HTTP stack: nothing was sent
                raise ProviderError(self.redact(f"{self.name}: the request could not be sent ({exc})")) from None
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # never reached the service: safe to repeat, even a create
                await self._again(attempt, f"{self.name}: cannot reach {self.base_url} ({type(exc).__name__})")
                continue
            except httpx.TransportError as exc:
                if create and not idempotent:
                    raise AmbiguousCreate(
                        f"{self.name}: the create request was sent but no answer came back "
                        f"({type(exc).__name__}); it may have started a paid job, so it is not re-sent") from None
                await self._again(attempt, f"{self.name}: {type(exc).__name__} talking to {self.base_url}")
                continue
            status = response.status_code
            if status < 400 or status in ok:
                return response
            if status == 429:
                wait = retry_after(response, attempt, self.clock.scale)
                self.limiter.block(wait)
                retries.set(retries.get() + 1)
                continue
            if status in (401, 402, 403):
                raise ProviderAuthError(self._auth_message(response), status=status)
            if status >= 500 and (not create or idempotent) and attempt <= READ_RETRIES:
                await self._again(attempt, "")
                continue
            message = self.redact(f"{self.name} ({self.type_name}) answered {status}: {service_message(response)}")
            if create and not idempotent and status >= 500:
                # only a 4xx says nothing was created: a 5xx may come after the job started upstream
                raise AmbiguousCreate(f"{message}; the job may have started and been charged, so it is not re-sent")
            raise ProviderError(message, retryable=status >= 500, status=status)

    async def _again(self, attempt: int, failure: str) -> None:
        """Back off before another try, or give up with ``failure`` once the retries are spent."""
        if attempt > READ_RETRIES:
            raise ProviderError(failure, retryable=True)
        retries.set(retries.get() + 1)
        await self.clock.sleep(backoff(attempt))

    def _auth_message(self, response: httpx.Response) -> str:  # noqa: D401
        what = {401: "rejected the API key", 402: "refused payment (no credit left)",
                403: "refused access for the API key"}[response.status_code]
        where = f" in ${self.key_env}" if self.key_env else ""
        return self.redact(f"{self.name} ({self.type_name}) {what}{where} ({response.status_code}: "
                           f"{service_message(response)}); no more jobs are submitted to it")

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        response = await self.request("GET", path, **kwargs)
        return json_body(response, self.name)

    async def download(self, url: str, max_bytes: int, auth: bool = False) -> bytes:
        """Fetch a result file, stopping as soon as it exceeds ``max_bytes``.

        Result files come from the services' CDN hosts, which their API rate limits do not cover,
        so downloads take no slot (a 429 from a CDN is still honoured).
        """
        attempt = 0
        while True:
            attempt += 1
            headers = self.auth_headers() if auth else {}
            try:
                async with self.client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 429:
                        await self.clock.sleep(retry_after(response, attempt, self.clock.scale))
                        continue
                    if response.status_code >= 500 and attempt <= READ_RETRIES:
                        await self._again(attempt, "")
                        continue
                    if response.status_code >= 400:  # a file host's 403/404: an expired or missing file
                        await response.aread()
                        said = self.redact(service_message(response))
                        raise ProviderError(f"{self.name}: download failed ({response.status_code}: {said})",
                                            retryable=True, status=response.status_code, detail=said)
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise ProviderError(f"{self.name}: the result file is larger than "
                                                f"{max_bytes // 2**20} MiB; refusing it")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TransportError as exc:
                await self._again(attempt, f"{self.name}: download failed ({type(exc).__name__})")


def json_body(response: httpx.Response, name: str) -> Any:
    """The JSON of a 2xx answer; an unreadable one is a retryable error without an HTTP status
    (for a create that means ambiguous: the service said yes to something we cannot read)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProviderError(f"{name}: expected JSON, got {response.headers.get('content-type', '?')} "
                            f"({response.status_code})", retryable=True) from None
