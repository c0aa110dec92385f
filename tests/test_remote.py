"""The shared team cache's stores against real servers: a local folder, moto's S3 server, nginx WebDAV."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from musicbuild.errors import MusicbuildError
from musicbuild.remote import (AUTH_ENV, STORAGE_OPTIONS_ENV, RemoteError, RemoteStore,
                               get_blob, get_record, open_remote, put_blob, put_record)
from musicbuild.remote.http import HttpStore
from musicbuild.remote.objectstore import FsspecStore

from .remote_servers import NGINX, NGINX_PASSWORD, NGINX_USER, MotoS3, Nginx, blackhole, closed_port

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx; .ci/run does)")

# Insurance: the suite turns warnings into errors, and botocore/moto have emitted DeprecationWarnings
# from their own code on newer Pythons (none with the versions installed today). Only theirs are ignored.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning:botocore\..*"),
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning:moto\..*"),
]

BUCKET = "team-cache"
GEN_KEY = "a" * 64
RECORD = {"provider": "local", "model": "synth-1", "cost_usd": 0.0,
          "clips": [{"sha256": hashlib.sha256(b"clip").hexdigest(), "format": "flac", "bytes": 4}]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- servers (one per module) and one store per test --------------------------------------------
@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in MotoS3.ENV.items():
            mp.setenv(name, value)
        with MotoS3() as server:
            server.create_bucket(BUCKET)
            yield server


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does)")
    with Nginx(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials the way a user gives them: env vars, isolated from any ~/.aws on the machine."""
    for name, value in MotoS3.ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


class Backend:
    """A fresh store under a unique prefix, plus a back door to write bytes behind its back."""

    def __init__(self, name: str, url: str, raw_write: Callable[[str, bytes], None]) -> None:
        self.name = name
        self.url = url
        self.raw_write = raw_write
        self.stores: list[RemoteStore] = []

    def open(self, **kw) -> RemoteStore:
        store = open_remote(self.url, **kw)
        self.stores.append(store)
        return store


@pytest.fixture(params=["file", "s3", "http"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    monkeypatch.delenv(AUTH_ENV, raising=False)
    if request.param == "file":
        root = tmp_path / "team-cache"

        def raw(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        b = Backend("file", root.as_uri(), raw)
    elif request.param == "s3":
        server: MotoS3 = request.getfixturevalue("moto_s3")
        request.getfixturevalue("aws_env")
        monkeypatch.setenv(STORAGE_OPTIONS_ENV, json.dumps({"client_kwargs": {"endpoint_url": server.endpoint}}))
        client = server.client()

        def raw(key: str, data: bytes) -> None:
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=data)

        b = Backend("s3", f"s3://{BUCKET}/{prefix}", raw)
    else:
        server: Nginx = request.getfixturevalue("nginx")

        def raw(key: str, data: bytes) -> None:
            path = server.root / prefix / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        b = Backend("http", f"{server.url}/{prefix}", raw)
    yield b
    for store in b.stores:
        store.close()


@pytest.fixture
def store(backend: Backend) -> RemoteStore:
    return backend.open()


# -- every backend -------------------------------------------------------------------------------
def test_open_remote_picks_the_backend(backend: Backend, store: RemoteStore) -> None:
    assert isinstance(store, RemoteStore)
    assert isinstance(store, HttpStore if backend.name == "http" else FsspecStore)
    assert store.display == backend.url


def test_blob_round_trip_is_verified_and_skips_what_is_there(store: RemoteStore) -> None:
    data = b"RIFF" + bytes(range(256)) * 40
    assert put_blob(store, data) == sha(data)
    assert get_blob(store, sha(data)) == data
    assert store.exists("cas/" + sha(data))

    puts: list[str] = []
    real_put = store.put
    store.put = lambda key, value: (puts.append(key), real_put(key, value))[1]  # type: ignore[method-assign]
    try:
        assert put_blob(store, data) == sha(data)
    finally:
        del store.put
    assert puts == []  # already there: not uploaded again


def test_absent_keys_are_none(store: RemoteStore) -> None:
    assert get_blob(store, sha(b"never stored")) is None
    assert get_record(store, "f" * 64) is None
    assert store.get("cas/" + sha(b"never stored")) is None
    assert not store.exists("ac/" + "f" * 64)
    store.delete("cas/" + sha(b"never stored"))  # deleting what is absent is fine


def test_corrupt_blob_is_an_error_naming_the_key(backend: Backend, store: RemoteStore) -> None:
    good = b"the real audio"
    key = "cas/" + sha(good)
    backend.raw_write(key, b"something else entirely")
    with pytest.raises(RemoteError, match="corrupt") as err:
        get_blob(store, sha(good))
    assert key in err.value.message
    assert backend.url in err.value.message
    # ... and it was removed, so the next upload of the real audio repairs the remote
    assert not store.exists(key)
    put_blob(store, good)
    assert get_blob(store, sha(good)) == good


def test_record_round_trip(store: RemoteStore) -> None:
    put_record(store, GEN_KEY, RECORD)
    assert get_record(store, GEN_KEY) == RECORD
    assert store.exists("ac/" + GEN_KEY)
    newer = {**RECORD, "cost_usd": 0.5}
    put_record(store, GEN_KEY, newer)  # a record may be replaced
    assert get_record(store, GEN_KEY) == newer


@pytest.mark.parametrize("garbage", [b"not json {", b"\xff\xfe", b"[1, 2]", b'{"clips": "x"}', b'{"clips": []}',
                                     b'{"clips": [{"sha256": "abc", "format": "flac", "bytes": 1}]}',
                                     b'{"clips": [{"sha256": "' + b"a" * 64 + b'", "format": "flac", "bytes": -1}]}'])
def test_garbage_record_is_an_error(backend: Backend, store: RemoteStore, garbage: bytes) -> None:
    backend.raw_write("ac/" + GEN_KEY, garbage)
    with pytest.raises(RemoteError, match="corrupt record ac/" + GEN_KEY):
        get_record(store, GEN_KEY)


def test_put_record_refuses_an_invalid_record(store: RemoteStore) -> None:
    with pytest.raises(ValueError, match="clips"):
        put_record(store, GEN_KEY, {"provider": "local"})
    with pytest.raises(ValueError, match="64 lowercase hex"):
        put_record(store, "../../etc/passwd", RECORD)
    with pytest.raises(ValueError, match="invalid remote cache key"):
        store.get("../outside")
    assert not store.exists("ac/" + GEN_KEY)


def test_exists_and_delete(store: RemoteStore) -> None:
    key = "cas/" + sha(b"x")
    assert not store.exists(key)
    store.put(key, b"x")
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    assert store.get(key) is None
    store.delete(key)


def test_list(backend: Backend, store: RemoteStore) -> None:
    assert list(store.list("cas/")) == []  # nothing written yet (the folder does not even exist)
    blobs = [b"one", b"two two", b"three three three"]
    before = time.time()
    for data in blobs:
        put_blob(store, data)
    put_record(store, GEN_KEY, RECORD)
    if backend.name == "file":  # a writer's temp file in flight is not a key
        (Path(store.fs._strip_protocol(backend.url)) / "cas" / ".partial.1234.tmp").write_bytes(b"half")

    cas = list(store.list("cas/"))
    assert [(k, size) for k, size, _ in cas] == sorted(("cas/" + sha(d), len(d)) for d in blobs)
    for _, _, mtime in cas:
        assert before - 5 <= mtime <= time.time() + 5
    assert [k for k, _, _ in store.list("ac/")] == ["ac/" + GEN_KEY]
    assert len(list(store.list(""))) == 4
    first = sha(blobs[0])
    assert [k for k, _, _ in store.list("cas/" + first[:3])] == ["cas/" + first]


def test_concurrent_puts_of_the_same_key_are_safe(backend: Backend, store: RemoteStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    key = "cas/" + sha(data)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            if i % 2:
                store.put(key, data)
            else:
                put_blob(store, data)
            if backend.name != "s3":  # moto is not thread-safe: a read racing a write can see half an object
                assert get_blob(store, sha(data)) == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert get_blob(store, sha(data)) == data
    assert [k for k, _, _ in store.list("cas/")] == [key]
    if backend.name == "file":
        folder = Path(store.fs._strip_protocol(backend.url)) / "cas"
        assert [p.name for p in folder.iterdir()] == [sha(data)]  # no temp file left behind


# -- down, hung and refusing servers -------------------------------------------------------------
def assert_fails_fast(call: Callable[[], object], within: float = 3.0, match: str | None = None) -> RemoteError:
    start = time.monotonic()
    with pytest.raises(RemoteError, match=match) as err:
        call()
    elapsed = time.monotonic() - start
    assert elapsed < within, f"took {elapsed:.1f} s"
    return err.value


@needs_nginx
def test_http_server_stopped(tmp_path: Path) -> None:
    with Nginx(tmp_path / "nginx") as server:
        store = open_remote(server.url + "/c", timeout=1.0)
        digest = put_blob(store, b"audio")
    try:
        for call in (lambda: get_blob(store, digest), lambda: put_blob(store, b"more"),
                     lambda: list(store.list("cas/"))):
            err = assert_fails_fast(call, match="unreachable")
            assert server.url in err.message
    finally:
        store.close()


def test_s3_server_stopped(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    server = MotoS3().start()
    try:
        server.create_bucket("short-lived")
        monkeypatch.setenv(STORAGE_OPTIONS_ENV, json.dumps({"client_kwargs": {"endpoint_url": server.endpoint}}))
        store = open_remote("s3://short-lived/x", timeout=1.0)
        digest = put_blob(store, b"audio")
    finally:
        server.stop()
    for call in (lambda: get_blob(store, digest), lambda: put_blob(store, b"more")):
        err = assert_fails_fast(call)
        assert "s3://short-lived/x" in err.message


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_closed_port(scheme: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with closed_port() as port:
        if scheme == "s3":
            monkeypatch.setenv(STORAGE_OPTIONS_ENV, json.dumps({"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}))
            store = open_remote("s3://bucket/p", timeout=1.0)
        else:
            store = open_remote(f"http://127.0.0.1:{port}/cache", timeout=1.0)
        assert_fails_fast(lambda: get_blob(store, "0" * 64))
        assert_fails_fast(lambda: put_blob(store, b"x"))
        store.close()


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_hung_server_respects_the_timeout(scheme: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts connections and never answers costs about the timeout, not forever."""
    with blackhole() as port:
        if scheme == "s3":
            monkeypatch.setenv(STORAGE_OPTIONS_ENV, json.dumps({"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}))
            store = open_remote("s3://bucket/p", timeout=0.5)
        else:
            store = open_remote(f"http://127.0.0.1:{port}/cache", timeout=0.5)
        assert_fails_fast(lambda: store.get("cas/" + "0" * 64), match="timed out")
        assert_fails_fast(lambda: store.put("cas/" + sha(b"x"), b"x"), match="timed out")
        store.close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first request for each path, then serves it (a restarting cache)."""

    seen: set[str] = set()
    store: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _flaky(self) -> bool:
        if self.path not in self.seen:
            self.seen.add(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not self._flaky():
            self.store[self.path] = body
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self) -> None:
        if not self._flaky():
            body = self.store.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    def do_HEAD(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_http_retries_5xx() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with HttpStore(f"http://127.0.0.1:{server.server_port}/c") as store:
            digest = put_blob(store, b"survives a 503")
            assert get_blob(store, digest) == b"survives a 503"
    finally:
        server.shutdown()
        server.server_close()


def test_unusable_local_folder(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    store = open_remote((tmp_path / "a-file" / "cache").as_uri())
    with pytest.raises(RemoteError, match="cannot (check|write) cas/"):
        put_blob(store, b"x")
    with pytest.raises(RemoteError, match="cannot read cas/"):
        get_blob(store, sha(b"x"))


# -- credentials ---------------------------------------------------------------------------------
@needs_nginx
def test_http_basic_auth_never_shows_the_password(nginx: Nginx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)
    host = nginx.url.removeprefix("http://")
    good = open_remote(f"http://{NGINX_USER}:{NGINX_PASSWORD}@{host}/secure/team")
    assert good.display == f"{nginx.url}/secure/team"
    digest = put_blob(good, b"behind auth")
    assert get_blob(good, digest) == b"behind auth"
    assert [k for k, _, _ in good.list("cas/")] == ["cas/" + digest]

    messages = []
    anonymous = open_remote(f"{nginx.url}/secure/team")
    with pytest.raises(RemoteError, match="HTTP 401") as err:
        get_blob(anonymous, digest)
    messages += err.value.lines()

    wrong = open_remote(f"http://{NGINX_USER}:wrong-{NGINX_PASSWORD}@{host}/secure/team")
    assert NGINX_PASSWORD not in wrong.display
    with pytest.raises(RemoteError, match="HTTP 401") as err:
        put_blob(wrong, b"nope")
    messages += err.value.lines() + [str(err.value), repr(wrong)]

    monkeypatch.setenv(AUTH_ENV, f"{NGINX_USER}:{NGINX_PASSWORD}")
    from_env = open_remote(f"{nginx.url}/secure/team")
    assert get_blob(from_env, digest) == b"behind auth"
    monkeypatch.setenv(AUTH_ENV, f"{NGINX_USER}:not-the-{NGINX_PASSWORD}")
    with pytest.raises(RemoteError, match="HTTP 401") as err:
        open_remote(f"{nginx.url}/secure/team").exists("cas/" + digest)
    messages += err.value.lines()

    with closed_port() as port:
        down = open_remote(f"https://{NGINX_USER}:{NGINX_PASSWORD}@127.0.0.1:{port}/c", timeout=1)
        assert down.display == f"https://127.0.0.1:{port}/c"
        with pytest.raises(RemoteError) as err:
            down.get("cas/" + digest)
        messages += err.value.lines()

    for store in (good, anonymous, wrong, from_env, down):
        store.close()
    for text in messages:
        assert NGINX_PASSWORD not in text
    assert any("MUSICBUILD_REMOTE_CACHE_AUTH" in m for m in messages)  # the hint says where to look


def test_storage_option_secrets_never_show(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with closed_port() as port:
        secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
        for options in ({"key": "AKIDEXAMPLE", "secret": secret,
                         "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}},
                        {"client_kwargs": {"endpoint_url": f"http://user:{secret}@127.0.0.1:{port}"}}):
            monkeypatch.setenv(STORAGE_OPTIONS_ENV, json.dumps(options))
            store = open_remote("s3://bucket/p", timeout=1.0)
            with pytest.raises(RemoteError) as err:
                store.get("cas/" + "0" * 64)
            assert secret not in str(err.value) and secret not in store.display


def test_bad_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, "{not json")
    with pytest.raises(RemoteError, match=STORAGE_OPTIONS_ENV):
        open_remote(tmp_path.as_uri())
    monkeypatch.delenv(STORAGE_OPTIONS_ENV)
    with pytest.raises(RemoteError, match="unsupported remote cache URL nosuchproto://x"):
        open_remote("nosuchproto://user:pw@x")
    with pytest.raises(RemoteError, match=AUTH_ENV):
        open_remote("http://127.0.0.1:1/c", env={AUTH_ENV: "no-colon-here"})
    assert issubclass(RemoteError, MusicbuildError)
    # a plain path is a local folder; env= replaces os.environ for our variables
    store = open_remote(str(tmp_path / "plain"), env={})
    assert isinstance(store, FsspecStore) and store.display == str(tmp_path / "plain")
    put_record(store, GEN_KEY, RECORD)
    assert (tmp_path / "plain" / "ac" / GEN_KEY).exists()


@needs_nginx
def test_http_listing_not_supported(nginx: Nginx) -> None:
    with open_remote(f"{nginx.url}/nolist") as store:
        put_blob(store, b"stored fine")  # a server without listing still caches
        with pytest.raises(RemoteError, match="listing not supported"):
            list(store.list("cas/"))


def test_other_fsspec_schemes_and_display() -> None:
    prefix = f"memory://mb-{uuid.uuid4().hex[:8]}/cache"
    store = open_remote(prefix)
    assert store.display == prefix
    digest = put_blob(store, b"in memory")
    put_record(store, GEN_KEY, RECORD)
    assert get_blob(store, digest) == b"in memory" and get_record(store, GEN_KEY) == RECORD
    assert [k for k, _, _ in store.list("")] == ["ac/" + GEN_KEY, "cas/" + digest]

    displays = {
        "http://u:pw-123@[::1]:8443/c/": "http://[::1]:8443/c",
        "https://tok-123@cache.example.com/team": "https://cache.example.com/team",
        "simplecache::s3://AKID:sec-123@bucket/p": "simplecache::s3://bucket/p",
    }
    for url, shown in displays.items():
        try:
            assert open_remote(url).display == shown
        except RemoteError as exc:  # s3fs refuses credentials in the URL: fine, as long as they stay hidden
            assert "123" not in str(exc)
    with pytest.raises(RemoteError) as err:
        open_remote("http://u:pw-123@[::1/c")
    assert "pw-123" not in str(err.value)
