"""Start one provider emulator by hand, for demos: ``python -m tests.emulators verbatik --port 8080``.

Prints the base URL (put it in the provider's ``base_url:``) and the ``export`` lines for the API key
(and ``MUSICBUILD_TIME_SCALE`` when the clock is scaled), then serves until Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import time

# service -> (module, class, environment variable musicbuild reads the key from)
SERVICES = {
    "aigateway": ("tests.emulators.aigateway", "AIgatewayEmulator", "AIGATEWAY_API_KEY"),
    "verbatik": ("tests.emulators.verbatik", "VerbatikEmulator", "VERBATIK_API_KEY"),
    "sonauto": ("tests.emulators.sonauto", "SonautoEmulator", "SONAUTO_API_KEY"),
    "beatra": ("tests.emulators.beatra", "BeatraEmulator", "BEATRA_API_KEY"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default 8080)")
    parser.add_argument("--rpm", type=float, default=None, help="requests per 60 virtual seconds (default: no limit)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="real seconds per virtual second")
    parser.add_argument("--latency", type=float, nargs=2, metavar=("MIN", "MAX"), default=[30.0, 90.0],
                        help="job latency range in virtual seconds (default 30 90; MIN = MAX for a fixed one)")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--fail-jobs", type=float, default=0.0, help="probability a job fails")
    args = parser.parse_args(argv)
    if not args.time_scale > 0:
        parser.error("--time-scale must be > 0")
    module, cls_name, env = SERVICES[args.service]
    cls = getattr(importlib.import_module(module), cls_name)  # lazy: only the one asked for
    latency = (args.latency[0], args.latency[1])
    emulator = cls(api_key=args.api_key, rpm=args.rpm, time_scale=args.time_scale, latency=latency)
    emulator.faults.fail_jobs = args.fail_jobs
    emulator.start(args.port)
    print(f"{args.service} emulator on {emulator.url}  (the provider's base_url)", flush=True)
    print(f"export {env}={shlex.quote(args.api_key)}", flush=True)
    if args.time_scale != 1.0:
        print(f"export MUSICBUILD_TIME_SCALE={args.time_scale:g}", flush=True)
    print("Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
