"""fsspec backend of the shared cache: local folders, S3, GCS, ... (see the package docstring)."""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote


from . import (STORAGE_OPTIONS_ENV, RemoteError, _CHAIN, _KEY, _MIN_BANDWIDTH, _OBJECT_STORES, _RETRY_DELAYS, _RETRY_STATUS, _Secrets, _check_key, _describe, _display_url, _prefix_dir)
from .http import _http_date


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

        from ..cache import atomic_write_bytes

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
