"""The frame every provider emulator shares: a real HTTP server on 127.0.0.1 with a virtual clock.

Each emulator subclasses ``Emulator`` and registers routes. The base gives them what every hosted
music API has and what our tests need to provoke:

- bearer-key auth (401 with the service's own error body),
- a sliding-window rate limit (``rpm`` requests per 60 virtual seconds, every request counts) that
  answers 429 + ``Retry-After``,
- a virtual clock: ``time_scale`` real seconds per virtual second, so a 30-90 s job or a 60 s rate
  window runs in milliseconds (musicbuild reads the same factor from ``MUSICBUILD_TIME_SCALE``),
- switchable faults (``faults``): 429 storms, 5xx bursts, dropped connections after a create, create
  answers the client cannot read (the job exists), 401 or 402 on every request (polls included),
  failed or slow jobs, non-audio or oversized downloads, and a request log to count creates and
  check rates,
- jobs forgotten after a retention period (``retention``: polls answer 404), and ``Retry-After``
  as delta-seconds or as an HTTP date (``retry_after_format``, RFC 9110 allows both),
- real audio bytes (numpy + soundfile / PyAV) of the requested format and length.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np


class DropConnection(Exception):
    """Close the socket without any response (the request may still have had its effect)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list/str -> JSON, bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass
class Faults:
    """Switches tests flip at run time. Counters count down as requests consume them."""

    rate_limit_storm: int = 0  # the next N requests get 429
    server_errors: int = 0  # the next N requests get `server_error_status`
    server_error_status: int = 503
    drop_after_create: int = 0  # the next N creates take effect, then the connection is dropped
    unreadable_creates: int = 0  # the next N creates take effect, then answer 2xx with a body no client can read
    unreadable_body: bytes = b"<html><body>Accepted</body></html>"
    fail_jobs: float = 0.0  # probability a job ends failed
    slow_factor: float = 1.0  # multiplies job latency
    non_audio_downloads: bool = False
    oversized_downloads: int = 0  # bytes of junk to send instead of audio (0 = off)
    auth_error: bool = False  # every request 401
    payment_required: bool = False  # creates get 402
    payment_required_all: bool = False  # every API request (polls too) gets 402


@dataclass
class LogEntry:
    t: float  # virtual seconds since start
    method: str
    path: str
    status: int
    public: bool = False  # a file download (CDN), outside the API's rate limit


class Emulator:
    name = "emulator"
    retry_after_header = True

    def __init__(self, *, api_key: str = "test-key", rpm: float | None = None, time_scale: float = 1.0,
                 latency: float | tuple[float, float] = (30.0, 90.0), seed: int = 0,
                 url_ttl: float = 3600.0, audio_seconds: float | None = None, retention: float | None = None,
                 retry_after_format: str = "seconds") -> None:
        assert retry_after_format in ("seconds", "http-date"), retry_after_format
        self.retention = retention  # virtual seconds a job stays known after its creation (None: forever)
        self.retry_after_format = retry_after_format
        self.api_key = api_key
        self.rpm = rpm
        self.time_scale = time_scale
        self.latency = latency
        self.rng = random.Random(seed)
        self.url_ttl = url_ttl
        self.audio_seconds = audio_seconds  # None: as requested
        self.faults = Faults()
        self.log: list[LogEntry] = []
        self.creates = 0
        self.lock = threading.RLock()
        self._window: list[float] = []
        self._routes: list[tuple[str, re.Pattern[str], Callable[[Request], Response]]] = []
        self._t0 = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._create_seen = threading.local()
        self.routes()

    # -- to override -------------------------------------------------------------------------
    def routes(self) -> None:
        """Register routes with ``self.route``."""

    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return {"error": {"message": message, "code": status}}

    # -- clock and jobs ----------------------------------------------------------------------
    def now(self) -> float:
        return (time.monotonic() - self._t0) / self.time_scale

    def draw_latency(self) -> float:
        lat = self.latency
        value = self.rng.uniform(*lat) if isinstance(lat, tuple) else float(lat)
        return value * self.faults.slow_factor

    def draw_failure(self) -> bool:
        return self.rng.random() < self.faults.fail_jobs

    def sleep(self, virtual_seconds: float) -> None:
        time.sleep(max(0.0, virtual_seconds) * self.time_scale)

    # -- serving -----------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Callable[[Request], Response]) -> None:
        self._routes.append((method, re.compile("^" + pattern + "$"), handler))

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> "Emulator":
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in separate writes: without this, Nagle + delayed ACK
                # add ~40 ms to every response
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _handle(self) -> None:
                emulator._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _handle

        self._server = _Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Emulator":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Request(h.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()}, body)
        arrived = self.now()  # log arrival, as the rate limit sees it, not when a slow answer was ready
        self._create_seen.value = False
        try:
            resp = self._respond(req)
        except DropConnection:
            self._record(arrived, req, 0)
            h.close_connection = True
            return
        if self._create_seen.value and resp.status < 300:
            with self.lock:
                garble = self.faults.unreadable_creates > 0
                self.faults.unreadable_creates -= garble
            if garble:  # the job was created; its answer is unreadable
                resp = Response(resp.status, self.faults.unreadable_body, dict(resp.headers), "text/html")
        self._record(arrived, req, resp.status)
        try:
            self._send(h, resp)
        except (BrokenPipeError, ConnectionResetError):  # the client is gone (killed mid-request)
            h.close_connection = True

    def _record(self, arrived: float, req: Request, status: int) -> None:
        with self.lock:
            self.log.append(LogEntry(arrived, req.method, req.path, status, getattr(req, "public", False)))

    def _match(self, req: Request) -> Callable[[Request], Response] | None:
        for method, pattern, handler in self._routes:
            m = pattern.match(req.path)
            if m and method == req.method:
                req.params = m.groupdict()
                return handler
        return None

    def _respond(self, req: Request) -> Response:
        handler = self._match(req)
        is_public = handler is not None and getattr(handler, "public", False)
        req.public = is_public  # type: ignore[attr-defined]
        with self.lock:
            # files come from a CDN host in the real services: the API's rate limit does not count them
            limited = None if is_public else self._rate_limit()
            if limited is not None:
                return limited
            if self.faults.rate_limit_storm > 0 and not is_public:
                self.faults.rate_limit_storm -= 1
                return self._too_many(2.0)
            if self.faults.server_errors > 0:
                self.faults.server_errors -= 1
                status = self.faults.server_error_status
                return Response(status, self.error_body(status, "upstream unavailable, try again"))
        if handler is None:
            return Response(404, self.error_body(404, f"no route for {req.method} {req.path}", "not_found"))
        if not is_public:
            denied = self._check_auth(req)
            if denied is not None:
                return denied
            if self.faults.payment_required_all:
                return Response(402, self.error_body(402, "Insufficient balance", "insufficient_balance"))
        return handler(req)

    def _check_auth(self, req: Request) -> Response | None:
        if self.faults.auth_error or req.headers.get("authorization") != f"Bearer {self.api_key}":
            return Response(401, self.error_body(401, "Invalid or missing API key", "unauthorized"))
        return None

    def _rate_limit(self) -> Response | None:
        if not self.rpm:
            return None
        now = self.now()
        self._window = [t for t in self._window if t > now - 60.0]
        if len(self._window) >= self.rpm:
            return self._too_many(self._window[0] + 60.0 - now)
        self._window.append(now)
        return None

    def _too_many(self, wait: float) -> Response:
        seconds = max(1, math.ceil(wait))
        if self.retry_after_format == "http-date":  # a wall-clock instant: real seconds from now
            from email.utils import formatdate

            value = formatdate(math.ceil(time.time() + seconds * self.time_scale) + 1, usegmt=True)
        else:
            value = str(seconds)
        headers = {"Retry-After": value} if self.retry_after_header else {}
        return Response(429, self.error_body(429, "Rate limit exceeded", "rate_limited"), headers)

    def _send(self, h: BaseHTTPRequestHandler, resp: Response) -> None:
        if isinstance(resp.body, (bytes, bytearray)):
            data, ctype = bytes(resp.body), resp.content_type or "application/octet-stream"
        elif resp.body is None:
            data, ctype = b"", resp.content_type or "application/json"
        else:
            data, ctype = json.dumps(resp.body).encode(), resp.content_type or "application/json"
        h.send_response(resp.status)
        if resp.status != 304:
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
        else:
            data = b""
        for k, v in resp.headers.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    # -- helpers for subclasses --------------------------------------------------------------
    def past_retention(self, created: float) -> bool:
        """A job created at ``created`` (virtual seconds) that the service no longer knows."""
        return self.retention is not None and self.now() - created > self.retention

    def count_create(self) -> None:
        self._create_seen.value = True
        with self.lock:
            self.creates += 1
            if self.faults.drop_after_create > 0:
                self.faults.drop_after_create -= 1
                raise DropConnection()

    def requests_in_any_window(self, window: float = 60.0) -> int:
        """The most API requests seen in any `window` virtual seconds (what a rate limit bounds)."""
        times = sorted(e.t for e in self.log if not e.public)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - window:
                j += 1
            best = max(best, i - j + 1)
        return best

    def download_body(self, fmt: str, seconds: float, seed: int) -> Response:
        if self.faults.non_audio_downloads:
            return Response(200, b"<html><body>Access denied</body></html>", content_type="text/html")
        if self.faults.oversized_downloads:
            return Response(200, b"\0" * self.faults.oversized_downloads, content_type="audio/mpeg")
        ctype = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg",
                 "m4a": "audio/mp4"}[fmt]
        return Response(200, make_audio(fmt, self.audio_seconds or seconds, seed), content_type=ctype)

    def signed(self, path: str) -> str:
        """A URL to ``path`` that expires ``url_ttl`` virtual seconds from now."""
        return f"{self.url}{path}?exp={self.now() + self.url_ttl:.3f}"

    def expired(self, req: Request) -> bool:
        exp = req.query.get("exp", ["0"])[0]
        return float(exp) < self.now()


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops the SYNs of a client opening dozens of connections
    # at once; the kernel then retries a second later, which looks like a slow or hung service
    request_queue_size = 512
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client killed mid-request is no error
            super().handle_error(request, client_address)


_AUDIO_CACHE: dict[tuple[str, float, int], bytes] = {}


def make_audio(fmt: str, seconds: float, seed: int, rate: int = 44100) -> bytes:
    """Real audio: a seeded stereo chord with a little noise, encoded as ``fmt``."""
    key = (fmt, round(seconds, 3), seed)
    if key in _AUDIO_CACHE:
        return _AUDIO_CACHE[key]
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    sig = sum(np.sin(2 * np.pi * root * r * t) / (i + 1) for i, r in enumerate((1, 1.25, 1.5, 2)))
    sig = 0.2 * sig * np.minimum(1.0, np.minimum(t, t[::-1]) * 20) + 0.01 * rng.standard_normal(n)
    stereo = np.stack([sig, np.roll(sig, 50)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    if fmt == "m4a":
        import av

        with av.open(buf, "w", format="mp4") as out:
            stream = out.add_stream("aac", rate=rate)
            stream.layout = "stereo"
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo.T), format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    else:
        import soundfile as sf

        kind = {"mp3": ("MP3", "MPEG_LAYER_III"), "wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
                "ogg": ("OGG", "VORBIS")}[fmt]
        sf.write(buf, stereo, rate, format=kind[0], subtype=kind[1])
    data = buf.getvalue()
    _AUDIO_CACHE[key] = data
    return data


def public(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Mark a route that needs no API key (signed media URLs)."""
    target = getattr(handler, "__func__", handler)  # bound methods carry attributes on their function
    target.public = True  # type: ignore[attr-defined]
    return handler


@contextlib.contextmanager
def serving(cls: type[Emulator], **kw: Any) -> Iterator[tuple[Any, Any]]:
    """Start ``cls`` fast (virtual time 1000x) with a keyed httpx client, for emulator tests."""
    import httpx

    opts: dict[str, Any] = {"time_scale": 0.001, "latency": 5.0, "audio_seconds": 1.0, **kw}
    emu = cls(**opts).start()
    try:
        with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=5) as client:
            yield emu, client
    finally:
        emu.stop()


class Started:
    """Emulators a test module starts with shared defaults; ``stop_all`` ends them together."""

    def __init__(self, cls: type[Emulator], **defaults: Any) -> None:
        self.cls, self.defaults, self.running = cls, defaults, []

    def __call__(self, **kw: Any) -> Any:
        emu = self.cls(**{**self.defaults, **kw}).start()
        self.running.append(emu)
        return emu

    def stop_all(self) -> None:
        while self.running:
            self.running.pop().stop()
