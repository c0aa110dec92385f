"""HTTP(S) backend of the shared cache: bazel-remote / nginx WebDAV (see the package docstring)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit


from . import (AUTH_ENV, RemoteError, _KEY, _RETRY_DELAYS, _RETRY_STATUS, _Secrets, _check_key, _describe, _display_url, _prefix_dir)


# -- HTTP ----------------------------------------------------------------------------------------
class HttpStore:
    """bazel-remote / nginx WebDAV over HTTP(S) with httpx (pooled, thread-safe)."""

    def __init__(self, url: str, *, timeout: float = 10.0, env: Mapping[str, str] | None = None) -> None:
        import httpx

        env = os.environ if env is None else env
        self._secrets = _Secrets()
        self.display = _display_url(url).rstrip("/")
        try:
            split = urlsplit(url)
            user, password = split.username, split.password
        except ValueError:
            raise RemoteError(f"invalid remote cache URL {self.display}") from None
        if user is not None:
            self._secrets.add(unquote(user) if password is None else unquote(password))
            self._secrets.add(split.netloc.rsplit("@", 1)[0])
        try:
            split.port
        except ValueError:
            raise RemoteError(f"invalid port in the remote cache URL {self.display}") from None
        if not split.hostname:
            raise RemoteError(f"the remote cache URL {self.display} has no host")
        if split.query or split.fragment:
            raise RemoteError(f"the remote cache URL {self.display} must not have a query or fragment")
        self.base = self.display
        self.timeout = timeout

        auth = None
        if user is not None:
            auth = httpx.BasicAuth(unquote(user), unquote(password or ""))
        elif env.get(AUTH_ENV):
            value = env[AUTH_ENV]
            self._secrets.add(value)
            if ":" not in value:
                raise RemoteError(f"{AUTH_ENV} must be user:password")
            name, secret = value.split(":", 1)
            self._secrets.add(secret)
            auth = httpx.BasicAuth(name, secret)
        self._httpx = httpx
        self._client = httpx.Client(auth=auth, timeout=httpx.Timeout(timeout), follow_redirects=False,
                                    headers={"User-Agent": "musicbuild-remote-cache"})

    def __repr__(self) -> str:
        return f"HttpStore({self.display!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "HttpStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass

    # The protocol ---------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        resp = self._request("GET", _check_key(key))
        if resp.status_code == 200:
            return resp.content
        if resp.status_code == 404:
            return None
        raise self._status_error("GET", key, resp)

    def put(self, key: str, data: bytes) -> None:
        resp = self._request("PUT", _check_key(key), content=bytes(data))
        if resp.status_code in (200, 201, 204):
            return
        raise self._status_error("PUT", key, resp)

    def exists(self, key: str) -> bool:
        resp = self._request("HEAD", _check_key(key))
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._status_error("HEAD", key, resp)

    def delete(self, key: str) -> None:
        resp = self._request("DELETE", _check_key(key))
        if resp.status_code in (200, 202, 204, 404):
            return
        raise self._status_error("DELETE", key, resp)

    def list(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        folder = _prefix_dir(prefix)
        entries = self._autoindex(folder, missing_ok=False)
        return iter(sorted(self._walk(folder, entries, prefix)))

    # Listing via nginx autoindex_format json ----------------------------------------------------
    def _walk(self, folder: str, entries: list[dict], prefix: str) -> Iterator[tuple[str, int, float]]:
        for entry in entries:
            name = entry.get("name")
            if not isinstance(name, str) or not _KEY.fullmatch(name) or "/" in name:
                continue  # hidden files, odd names
            key = f"{folder}/{name}" if folder else name
            if entry.get("type") == "directory":
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(key, self._autoindex(key, missing_ok=True), prefix)
            elif entry.get("type") == "file" and key.startswith(prefix):
                yield key, int(entry.get("size") or 0), _http_date(entry.get("mtime"))

    def _autoindex(self, folder: str, *, missing_ok: bool) -> list[dict]:
        path = folder + "/" if folder else ""
        resp = self._request("GET", path)
        if resp.status_code == 404:
            # A folder nobody wrote to yet, or a server that cannot list at all? Ask the folders
            # above it, up to the server's root: a listing server lists one of them.
            if missing_ok or self._lists_above(folder):
                return []
            raise RemoteError(f"listing not supported by the remote cache {self.display}")
        if resp.status_code != 200:
            if resp.status_code in (403, 405, 400, 501):  # 401 is about credentials: said below
                raise RemoteError(f"listing not supported by the remote cache {self.display} "
                                  f"(HTTP {resp.status_code} for {path or '/'})")
            raise self._status_error("GET", path or "/", resp)
        entries = self._parse_index(resp)
        if entries is None:
            raise RemoteError(f"listing not supported by the remote cache {self.display} "
                              "(for nginx: autoindex on; autoindex_format json;)")
        return entries

    def _lists_above(self, folder: str) -> bool:
        split = urlsplit(self.base)
        segments = [s for s in (split.path + "/" + folder).split("/") if s][:-1]
        while True:
            path = "/" + "".join(s + "/" for s in segments)
            resp = self._request("GET", "", url=urlunsplit((split.scheme, split.netloc, path, "", "")))
            if resp.status_code == 200:
                return self._parse_index(resp) is not None
            if resp.status_code != 404 or not segments:
                return False
            segments.pop()

    @staticmethod
    def _parse_index(resp: Any) -> list[dict] | None:
        if "json" not in resp.headers.get("content-type", ""):
            return None
        try:
            entries = resp.json()
        except ValueError:
            return None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return None
        return entries

    # Requests with retries --------------------------------------------------------------------
    def _request(self, method: str, key: str, content: bytes | None = None, url: str | None = None) -> Any:
        httpx = self._httpx
        url = url or f"{self.base}/{key}"
        start = time.monotonic()
        for attempt in range(len(_RETRY_DELAYS) + 1):
            last = attempt == len(_RETRY_DELAYS)
            delay = 0.0 if last else _RETRY_DELAYS[attempt]
            # Retrying is only worth it while it stays within the timeout the caller gave.
            may_retry = not last and time.monotonic() - start + delay < self.timeout
            try:
                resp = self._client.request(method, url, content=content)
            except httpx.TimeoutException:
                raise RemoteError(f"remote cache {self.display}: {method} {key or '/'} timed out "
                                  f"after {self.timeout:g} s") from None
            except httpx.TransportError as exc:  # refused, reset, closed mid-body, DNS, TLS
                if may_retry:
                    time.sleep(delay)
                    continue
                raise RemoteError(f"remote cache {self.display} is unreachable: {method} {key or '/'}: "
                                  f"{type(exc).__name__}: {_describe(exc, self._secrets)}") from None
            except httpx.HTTPError as exc:  # e.g. an invalid URL
                raise RemoteError(f"remote cache {self.display}: {method} {key or '/'}: "
                                  f"{_describe(exc, self._secrets)}") from None
            if resp.status_code in _RETRY_STATUS and may_retry:
                time.sleep(delay)
                continue
            return resp
        raise AssertionError("unreachable")

    def _status_error(self, method: str, key: str, resp: Any) -> RemoteError:
        code = resp.status_code
        what = f"HTTP {code} {resp.reason_phrase}".rstrip()
        hint = None
        if code in (401, 403):
            hint = f"check the credentials (URL userinfo or {AUTH_ENV})"
        elif code == 405 and method in ("PUT", "DELETE"):
            hint = f"the server does not accept {method} (nginx: dav_methods PUT DELETE;)"
        elif code == 400 and method == "PUT" and key.startswith("ac/"):
            hint = "bazel-remote validates ac/ entries: start it with --disable_http_ac_validation"
        elif 300 <= code < 400:
            hint = "redirects are not followed: use the final URL"
        return RemoteError(f"remote cache {self.display} refused {method} {key}: {what}", hint=hint)


def _http_date(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return 0.0
    return 0.0


