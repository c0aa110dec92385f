"""Real servers for the remote cache tests: nginx with WebDAV + JSON autoindex, and moto's S3 server.

Both listen on 127.0.0.1 on a free port and are stopped by their fixtures. nginx is Debian's
package (``apt-get install nginx``; ``.ci/run`` installs it); its tests are skipped with a reason
when the binary is missing. moto comes from the ``test`` extra.
"""
from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                       if os.access(p, os.X_OK)), None)
NGINX_USER = "cacheuser"
NGINX_PASSWORD = "s3cr3t-Pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on: connections are refused."""
    yield free_port()


class Nginx:
    """nginx in the foreground (``daemon off``) with everything under ``base``.

    ``/`` is a WebDAV cache (PUT/DELETE, create_full_put_path, JSON autoindex); ``/secure/`` is the
    same behind basic auth (``NGINX_USER``/``NGINX_PASSWORD``); ``/nolist/`` cannot be listed.
    """

    def __init__(self, base: Path) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        self.base = base
        self.root = base / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        b = self.base
        # Run as root (CI), nginx would hand the workers to "nobody", who cannot enter pytest's
        # 0700 temp folders: keep them as the current user.
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
        cache = """
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            autoindex on;
            autoindex_format json;
        """
        return f"""
daemon off;
master_process on;
worker_processes 2;
{user}
pid {b}/nginx.pid;
error_log {b}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {b}/access.log;
    default_type application/octet-stream;
    client_body_temp_path {b}/tmp/client_body;
    proxy_temp_path {b}/tmp/proxy;
    fastcgi_temp_path {b}/tmp/fastcgi;
    uwsgi_temp_path {b}/tmp/uwsgi;
    scgi_temp_path {b}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ {cache} }}
        location /secure/ {{
            {cache}
            auth_basic "musicbuild cache";
            auth_basic_user_file {b}/htpasswd;
        }}
        location /nolist/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            autoindex off;
        }}
    }}
}}
"""

    def start(self) -> "Nginx":
        for sub in ("data/secure", "data/nolist", "tmp"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "htpasswd").write_text(f"{NGINX_USER}:{{PLAIN}}{NGINX_PASSWORD}\n")
        conf = self.base / "nginx.conf"
        conf.write_text(self.config())
        log = (self.base / "stderr.log").open("wb")
        self.proc = subprocess.Popen([NGINX, "-p", str(self.base), "-c", str(conf), "-e", str(self.base / "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for_port(self.port, self.proc)
        except RuntimeError as exc:
            self.stop()
            logs = "".join(p.read_text(errors="replace") for p in (self.base / "stderr.log", self.base / "error.log")
                           if p.exists())
            raise RuntimeError(f"nginx did not start: {exc}\n{logs}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoS3:
    """moto's S3 server in a thread on 127.0.0.1 (a real HTTP endpoint that botocore talks to)."""

    REGION = "us-east-1"
    ENV = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> "MotoS3":
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        wait_for_port(port)
        return self

    def stop(self) -> None:
        self.server.stop()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


REDIS_SERVER = shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server")
                                                     if os.access(p, os.X_OK)), None)


class RedisServer:
    """Debian's redis-server in the foreground on a free loopback port, nothing persisted."""

    def __init__(self, base: Path) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.base = base
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.base), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
