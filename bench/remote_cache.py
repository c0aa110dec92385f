"""Shared-cache benchmark: a frozen build of N cached tracks from an empty local cache.

For each backend (a `file://` folder, S3 through a local moto server, HTTP through a local nginx
WebDAV server), machine A builds N short tracks on the local provider and uploads them; then
machine B (an empty local cache) runs `musicbuild build --frozen`, which fetches every generation
from the remote and materializes every output. Prints the frozen build's wall time, how much of it
was spent fetching, and the bytes moved each way.

    python bench/remote_cache.py [--tracks 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.remote_servers import NGINX, MotoS3, Nginx  # noqa: E402


def manifest(n: int) -> str:
    tracks = "".join(f"  - {{id: t{i:04d}, prompt: 'bench cue {i}', seed: {i}}}\n" for i in range(n))
    return f"version: 1\ndefaults: {{provider: local, format: wav, duration: 0.5}}\ntracks:\n{tracks}"


def build(folder: Path, env: dict[str, str], *args: str) -> tuple[float, dict]:
    report = folder / "report.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "musicbuild", "-q", "build", "-j", "8", "--report", str(report), *args],
                          cwd=folder, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(report.read_text())


def run(name: str, url: str, extra_env: dict[str, str], n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"mb-remote-{name}-"))
    env = {**os.environ, **extra_env, "MUSICBUILD_REMOTE_CACHE": url}
    a, b = work / "a", work / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "musicbuild.yaml").write_text(manifest(n))
    first, report_a = build(a, {**env, "MUSICBUILD_CACHE_DIR": str(work / "cache-a")})
    frozen, report_b = build(b, {**env, "MUSICBUILD_CACHE_DIR": str(work / "cache-b")}, "--frozen")
    remote = report_b["remote"] or {}
    outputs = sum(1 for _ in (b / "build").glob("*.wav"))
    print(f"{name:5s} tracks={n} outputs={outputs}  A: build+upload {first:6.1f} s, up {report_a['remote']['bytes_up'] / 1e6:6.1f} MB"
          f"  |  B: frozen build {frozen:6.1f} s ({n / frozen:5.0f} tracks/s), fetched {remote.get('fetched')} "
          f"generations, down {remote.get('bytes_down', 0) / 1e6:6.1f} MB")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=1000)
    args = ap.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    run("file", f"file://{tempfile.mkdtemp(prefix='mb-team-cache-')}", {}, args.tracks)
    with MotoS3() as s3:
        s3.create_bucket("bench")
        env = {**MotoS3.ENV, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
               "MUSICBUILD_REMOTE_STORAGE_OPTIONS": json.dumps({"client_kwargs": {"endpoint_url": s3.endpoint}})}
        run("s3", "s3://bench/music", env, args.tracks)
    if NGINX is None:
        print("http  skipped: nginx is not installed (apt-get install nginx)")
        return
    server = Nginx(Path(tempfile.mkdtemp(prefix="mb-nginx-")))
    server.start()
    try:
        run("http", server.url + "/cache", {}, args.tracks)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
