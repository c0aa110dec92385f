"""The shared team cache: a remote key/value store behind the local cache.

Keys follow the bazel-remote HTTP cache protocol, relative to the configured URL::

    cas/<sha256>      audio exactly as in the local cache, named by its SHA-256 (verified on read)
    ac/<gen_key>      a generation record as JSON: {"clips": [{"sha256", "format", "bytes"}, ...], ...}

Two backends, chosen by the URL scheme in ``open_remote``:

``http://`` / ``https://`` (``HttpStore``)
    The plain HTTP cache protocol of bazel-remote and nginx WebDAV: ``GET {url}/{key}`` (404 =
    absent), ``PUT {url}/{key}``, ``HEAD`` (exists), ``DELETE``. Listing uses nginx's
    ``autoindex_format json`` (``GET {url}/{dir}/``); servers that cannot list raise
    ``RemoteError("listing not supported")``. Basic auth comes from the URL's userinfo
    (``https://user:password@host/cache``) or ``MUSICBUILD_REMOTE_CACHE_AUTH=user:password`` (the URL
    wins). bazel-remote validates ``ac/`` entries as Bazel ActionResults unless started with
    ``--disable_http_ac_validation``; it answers our JSON records with HTTP 400 otherwise, and the
    error says so. Connection failures, 429 and 5xx are retried twice with a short backoff (every
    request here is idempotent: ``cas/`` keys are content-addressed, ``ac/`` PUTs replace a whole
    value); timeouts are not retried, so an unresponsive server costs about ``timeout`` seconds.

any other scheme, or a plain path (``FsspecStore``)
    ``file:///mnt/team-cache``, ``s3://bucket/prefix`` (needs ``s3fs``: ``pip install
    'musicbuild[s3]'``), ``gs://``, ``memory://``, ... through ``fsspec``. Credentials come from the
    backend's usual sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``,
    ``GOOGLE_APPLICATION_CREDENTIALS``, ...). ``MUSICBUILD_REMOTE_STORAGE_OPTIONS`` holds extra
    ``fsspec.filesystem`` keyword arguments as a JSON object, e.g. for MinIO or another
    S3-compatible server::

        MUSICBUILD_REMOTE_STORAGE_OPTIONS='{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}'

    Writes are atomic for readers: local paths are written to a temp file beside the key and
    renamed; object stores (S3, GCS, Azure, memory) replace an object in one PUT; other
    filesystems get a temp key that is moved into place. For S3, ``timeout`` becomes botocore's
    connect and read timeouts, and every call on an asynchronous filesystem also has an overall
    deadline, so a server that accepts connections and never answers cannot hang a build.

Every failure to reach, or be served by, the remote is a ``RemoteError`` whose message names the
remote by ``display`` (the URL without credentials) and never contains a credential.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import MusicbuildError

AUTH_ENV = "MUSICBUILD_REMOTE_CACHE_AUTH"
STORAGE_OPTIONS_ENV = "MUSICBUILD_REMOTE_STORAGE_OPTIONS"

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A key is one or more path segments of safe characters, none starting with a dot: no "..", no
# absolute paths, and never the name of one of our hidden temp files.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
_RETRY_DELAYS = (0.1, 0.4)  # a couple of quick retries for connection errors and 5xx
_RETRY_STATUS = {429, 500, 502, 503, 504}
# Filesystems where one write replaces an object atomically (no temp key + move needed).
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"}
_MIN_BANDWIDTH = 256 * 1024  # bytes/s assumed when sizing the overall deadline of an upload


class RemoteError(MusicbuildError):
    """The remote cache is down, refuses, or served something corrupt. Never carries credentials."""


@runtime_checkable
class RemoteStore(Protocol):
    display: str

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int, float]]: ...


# -- entry points --------------------------------------------------------------------------------
def open_remote(url: str, *, timeout: float = 10.0, env: Mapping[str, str] | None = None) -> RemoteStore:
    """The store for ``url``: HTTP(S) for ``http(s)://``, fsspec for anything else.

    ``env`` (default ``os.environ``) supplies ``MUSICBUILD_REMOTE_CACHE_AUTH`` and
    ``MUSICBUILD_REMOTE_STORAGE_OPTIONS``; backend credentials (AWS_* ...) are read by the backend
    itself from the process environment.
    """
    env = os.environ if env is None else env
    url = url.strip()
    if not url:
        raise RemoteError("the remote cache URL is empty")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "https"):
        return HttpStore(url, timeout=timeout, env=env)
    return FsspecStore(url, timeout=timeout, env=env)


def get_blob(store: RemoteStore, sha256: str) -> bytes | None:
    """The blob ``cas/<sha256>``, verified; None when absent.

    A blob whose content does not hash to its key is read once more (a bad transfer), then
    removed from the remote if still wrong (best effort: a reader may lack delete rights) so that
    the next ``put_blob`` repairs it, and reported as ``RemoteError("corrupt ...")``.
    """
    _check_hex("sha256", sha256)
    key = "cas/" + sha256
    for attempt in (1, 2):
        data = store.get(key)
        if data is None:
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual == sha256:
            return data
    removed = ""
    try:
        store.delete(key)
        removed = "; removed it"
    except RemoteError:
        pass
    raise RemoteError(f"corrupt blob {key} in the remote cache {store.display}: "
                      f"its content hashes to {actual[:12]} ({len(data)} bytes){removed}")


def put_blob(store: RemoteStore, data: bytes) -> str:
    """Upload ``data`` as ``cas/<sha256(data)>`` unless it is there already; returns the SHA-256."""
    sha = hashlib.sha256(data).hexdigest()
    key = "cas/" + sha
    if not store.exists(key):
        store.put(key, bytes(data))
    return sha


def get_record(store: RemoteStore, gen_key: str) -> dict[str, Any] | None:
    """The generation record ``ac/<gen_key>``, validated; None when absent, RemoteError if garbage."""
    _check_hex("generation key", gen_key)
    key = "ac/" + gen_key
    data = store.get(key)
    if data is None:
        return None
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RemoteError(f"corrupt record {key} in the remote cache {store.display}: not JSON") from None
    problem = _record_problem(record)
    if problem:
        raise RemoteError(f"corrupt record {key} in the remote cache {store.display}: {problem}")
    return record


def put_record(store: RemoteStore, gen_key: str, record: dict[str, Any]) -> None:
    """Upload a generation record as ``ac/<gen_key>`` (replacing any); it must be valid to go."""
    _check_hex("generation key", gen_key)
    problem = _record_problem(record)
    if problem:
        raise ValueError(f"not a generation record: {problem}")
    data = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    store.put("ac/" + gen_key, data)


def _check_hex(what: str, value: str) -> None:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex digits, got {value!r}")


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    clips = record.get("clips")
    if not isinstance(clips, list) or not clips:
        return '"clips" must be a non-empty list'
    for i, clip in enumerate(clips):
        if not isinstance(clip, dict):
            return f"clips[{i}] is not an object"
        if not isinstance(clip.get("sha256"), str) or not _HEX64.fullmatch(clip["sha256"]):
            return f"clips[{i}].sha256 is not a SHA-256"
        if not isinstance(clip.get("format"), str) or not clip["format"]:
            return f"clips[{i}].format is missing"
        size = clip.get("bytes")
        if type(size) is not int or size < 0:
            return f"clips[{i}].bytes is not a size"
    return None


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"invalid remote cache key {key!r}")
    return key


def _prefix_dir(prefix: str) -> str:
    """The folder to list for ``prefix`` ("cas/ab" -> "cas", "cas/" -> "cas", "" -> "")."""
    if prefix and not re.fullmatch(r"[A-Za-z0-9._/-]*", prefix) or ".." in prefix or prefix.startswith("/"):
        raise ValueError(f"invalid remote cache prefix {prefix!r}")
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""


class _Secrets:
    """Every credential we know of, to scrub from messages of third-party exceptions."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any) -> None:
        if isinstance(value, str) and len(value) >= 3:
            self.values.add(value)
            self.values.add(quote(value, safe=""))

    def scrub(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


def _describe(exc: BaseException, secrets: _Secrets) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = secrets.scrub(" ".join(text.split()))
    return text if len(text) <= 300 else text[:297] + "..."


_CHAIN = re.compile(r"::(?=[A-Za-z][A-Za-z0-9+.-]*(?:://|::|$))")  # fsspec's "simplecache::s3://..."


def _display_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (each part of a chained ``a::b`` URL)."""
    parts = []
    for part in _CHAIN.split(url):
        if "://" not in part:
            parts.append(part)
            continue
        try:
            s = urlsplit(part)
            host = s.hostname or ""
            port = s.port
        except ValueError:  # unparsable: cut out anything that could be userinfo
            scheme, _, rest = part.partition("://")
            parts.append(f"{scheme}://{rest.rpartition('@')[2].split('?')[0].split('#')[0]}")
            continue
        if ":" in host:
            host = f"[{host}]"
        parts.append(f"{s.scheme}://{host}{f':{port}' if port else ''}{s.path}")
    return "::".join(parts)


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


# -- fsspec --------------------------------------------------------------------------------------
class FsspecStore:
    """Any fsspec filesystem: local paths, S3 (s3fs), GCS, memory, ..."""

    def __init__(self, url: str, *, timeout: float = 10.0, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._secrets = _Secrets()
        self.display = _display_url(url).rstrip("/") or url
        self.timeout = timeout
        self._url_secrets(url)

        options: dict[str, Any] = {}
        raw = env.get(STORAGE_OPTIONS_ENV, "").strip()
        if raw:
            try:
                options = json.loads(raw)
            except ValueError:
                raise RemoteError(f"{STORAGE_OPTIONS_ENV} is not valid JSON") from None
            if not isinstance(options, dict):
                raise RemoteError(f"{STORAGE_OPTIONS_ENV} must be a JSON object")
        self._collect_secrets(options)

        try:
            from fsspec.core import url_to_fs
        except ImportError:  # pragma: no cover - a runtime dependency
            raise RemoteError("the remote cache needs fsspec: pip install fsspec") from None
        protocol = _CHAIN.split(url)[0].split("://", 1)[0].lower() if "://" in url else "file"
        if protocol in ("s3", "s3a"):
            options = self._s3_defaults(options, timeout)
        try:
            fs, path = url_to_fs(url, **options)
        except ImportError as exc:
            extra = " (pip install 'musicbuild[s3]')" if protocol in ("s3", "s3a") else ""
            raise RemoteError(f"the remote cache {self.display} needs a package that is not installed: "
                              f"{_describe(exc, self._secrets)}{extra}") from None
        except ValueError as exc:
            raise RemoteError(f"unsupported remote cache URL {self.display}: {_describe(exc, self._secrets)}") from None
        except Exception as exc:
            raise RemoteError(f"cannot open the remote cache {self.display}: "
                              f"{type(exc).__name__}: {_describe(exc, self._secrets)}") from None
        if protocol in ("s3", "s3a") and getattr(fs, "retries", 1) > 2:
            fs.retries = 2  # s3fs retries timeouts itself: once is plenty, botocore's are off
        self.fs = fs
        self.root = path.rstrip("/") or getattr(fs, "root_marker", "")  # "" or "/" at the very top
        fs_protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self._local = "file" in fs_protocols or "local" in fs_protocols
        self._object_store = bool(set(fs_protocols) & _OBJECT_STORES)
        self._async = bool(getattr(fs, "async_impl", False))
        if not self._local:
            self._drop_listing_cache()

    def __repr__(self) -> str:
        return f"FsspecStore({self.display!r})"

    def close(self) -> None:
        pass  # fsspec owns its filesystem instances and closes their sessions itself

    def __enter__(self) -> "FsspecStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url_secrets(self, url: str) -> None:
        for part in _CHAIN.split(url):
            scheme, sep, rest = part.partition("://")
            userinfo = rest.split("/", 1)[0].rpartition("@")[0] if sep else ""
            if userinfo:
                self._secrets.add(userinfo)
                self._secrets.add(unquote(userinfo.partition(":")[2]) or unquote(userinfo))

    def _collect_secrets(self, value: Any, name: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._collect_secrets(v, str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                self._collect_secrets(v, name)
        elif isinstance(value, str):
            if re.search(r"secret|passw|token|key|credential|sas|signature|auth", name, re.I):
                self._secrets.add(value)
            if "://" in value:
                self._url_secrets(value)  # e.g. an endpoint_url with userinfo

    @staticmethod
    def _s3_defaults(options: dict[str, Any], timeout: float) -> dict[str, Any]:
        options = dict(options)
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", timeout)
        # One attempt per botocore call: s3fs retries timeouts and throttling, we retry refusals.
        config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
        options["config_kwargs"] = config
        # Another machine writes the same bucket: never answer "absent" from a stale listing.
        options.setdefault("use_listings_cache", False)
        return options

    def _path(self, key: str) -> str:
        key = _check_key(key)
        if not self.root:
            return key
        return self.root + key if self.root.endswith("/") else f"{self.root}/{key}"

    def _drop_listing_cache(self) -> None:
        try:
            self.fs.invalidate_cache()
        except Exception:
            pass

    # Calls with deadlines, retries and error mapping -------------------------------------------
    def _call(self, what: str, key: str, name: str, *args: Any, nbytes: int = 0, **kwargs: Any) -> Any:
        """``fs.<name>(*args)``; FileNotFoundError passes through, everything else is a RemoteError.

        On an asynchronous filesystem its coroutine ``fs._<name>`` runs under an overall deadline.
        """
        coroutine = getattr(self.fs, "_" + name, None) if self._async else None
        start = time.monotonic()
        for attempt in range(len(_RETRY_DELAYS) + 1):
            last = attempt == len(_RETRY_DELAYS)
            delay = 0.0 if last else _RETRY_DELAYS[attempt]
            try:
                if coroutine is not None:
                    from fsspec.asyn import sync

                    # An overall deadline: botocore's timeouts miss some hangs (a PUT waiting
                    # forever for "100 Continue"). Uploads get time for their bytes on top;
                    # downloads and listings, whose size is unknown, rely on the read timeout
                    # and only get a generous backstop.
                    deadline = 3 * self.timeout + nbytes / _MIN_BANDWIDTH
                    if name in ("cat_file", "find"):
                        deadline = max(deadline, 600.0)
                    return sync(self.fs.loop, coroutine, *args, timeout=deadline, **kwargs)
                return getattr(self.fs, name)(*args, **kwargs)
            except FileNotFoundError:
                raise
            except Exception as exc:
                if _is_transient(exc) and not last and time.monotonic() - start + delay < self.timeout:
                    time.sleep(delay)
                    continue
                raise self._error(what, key, exc) from None
        raise AssertionError("unreachable")

    def _error(self, what: str, key: str, exc: BaseException) -> RemoteError:
        from fsspec.exceptions import FSTimeoutError

        if isinstance(exc, (FSTimeoutError, TimeoutError)) or "timeout" in type(exc).__name__.lower():
            detail = "timed out"
        else:
            detail = f"{type(exc).__name__}: {_describe(exc, self._secrets)}"
        hint = None
        if isinstance(exc, PermissionError):
            hint = "check the credentials for this remote (for S3: AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)"
        return RemoteError(f"remote cache {self.display}: cannot {what} {key}: {detail}", hint=hint)

    # The protocol ---------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = self._call("read", key, "cat_file", path)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return None
        return bytes(data)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        data = bytes(data)
        if self._local:
            self._put_local(key, path, data)
        elif self._object_store:
            self._put_call(key, "pipe_file", path, data, nbytes=len(data))
        else:
            self._put_via_temp(key, path, data)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            info = self._call("check", key, "info", path)
        except FileNotFoundError:
            return False
        return info.get("type") == "file"

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            self._call("delete", key, "rm_file", path)
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        folder = _prefix_dir(prefix)
        where = self._path(folder) if folder else self.root
        try:
            found = self._call("list", prefix or "/", "find", where, detail=True, withdirs=False)
        except FileNotFoundError:
            return iter(())
        finally:
            if not self._local:
                self._drop_listing_cache()
        base = self.root.rstrip("/") + "/" if self.root else ""
        rows = []
        for path, info in found.items():
            path = path.rstrip("/")
            if not path.startswith(base):
                path = self.fs._strip_protocol(path)  # some filesystems answer with full URLs
                if not path.startswith(base):
                    continue
            key = path[len(base):]
            if not _KEY.fullmatch(key) or not key.startswith(prefix):
                continue  # temp files (".name.xxx.tmp") and foreign names
            rows.append((key, int(info.get("size") or 0), _info_mtime(info)))
        return iter(sorted(rows))

    # Atomic writes ----------------------------------------------------------------------------
    def _put_call(self, key: str, name: str, *args: Any, nbytes: int = 0) -> None:
        try:
            self._call("write", key, name, *args, nbytes=nbytes)
        except FileNotFoundError as exc:  # e.g. the bucket does not exist
            raise self._error("write", key, exc) from None

    def _put_local(self, key: str, path: str, data: bytes) -> None:
        from pathlib import Path

        from .cache import atomic_write_bytes

        try:
            atomic_write_bytes(Path(path), data)  # temp file beside it + fsync + rename
        except OSError as exc:
            raise self._error("write", key, exc) from None

    def _put_via_temp(self, key: str, path: str, data: bytes) -> None:
        folder, _, name = path.rpartition("/")
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp" if folder else f".{name}.{uuid.uuid4().hex}.tmp"
        self._put_call(key, "pipe_file", tmp, data, nbytes=len(data))
        try:
            self._put_call(key, "mv", tmp, path)
        except RemoteError:
            # A filesystem whose rename refuses an existing target: for a content-addressed key
            # the one already there is the same content, and the temp is ours to remove.
            try:
                self._call("clean up", key, "rm_file", tmp)
            except (FileNotFoundError, RemoteError):
                pass
            if not (key.startswith("cas/") and self.exists(key)):
                raise


def _is_transient(exc: BaseException | None) -> bool:
    """Worth a quick retry: a refused/reset connection, 429 or 5xx (not a timeout, not a 4xx)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)):
            return True
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & {"EndpointConnectionError", "ConnectionClosedError", "ClientConnectorError",
                    "ServerDisconnectedError"}:
            return True
        response = getattr(exc, "response", None)  # botocore ClientError, kept as s3fs's __cause__
        if isinstance(response, dict):
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            code = (response.get("Error") or {}).get("Code")
            if status in _RETRY_STATUS or code in ("SlowDown", "Throttling", "ServiceUnavailable", "InternalError"):
                return True
        status = getattr(exc, "status", None)  # aiohttp ClientResponseError and friends
        if type(status) is int and status in _RETRY_STATUS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _info_mtime(info: Mapping[str, Any]) -> float:
    for name in ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "ctime"):
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return _http_date(value)
    return 0.0
