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
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from ..errors import MusicbuildError

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
        from .http import HttpStore

        return HttpStore(url, timeout=timeout, env=env)
    from .objectstore import FsspecStore

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
