"""`python -m bench` (`make bench`): see bench/__init__.py and BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bench.memory import HOLD_SECONDS
from bench.pg import ADMIN_DSN
from bench.procs import raise_open_files_limit
from bench.report import render, save_json
from bench.runner import Options, run_all
from bench.scenarios import SCENARIOS, scaled

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Room for (f)'s 1,000 WebSockets on both ends plus the HTTP scenarios' sockets.
OPEN_FILES = 8192
ALL_KEYS = "a,b,c,d,e,e100k,f,g"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 1/5)")
    parser.add_argument("--only", help=f"comma-separated scenario keys: {ALL_KEYS}")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    # One of each: on two cores, two of each took more CPU per request through the gateway
    # (0.28 against 0.19 ms, fewer requests per wake-up) and were no faster direct.
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument("--load-workers", type=int, default=1)
    parser.add_argument("--cap-seconds", type=float, help="wall-clock cap per run (default 60)")
    parser.add_argument("--ws-connections", type=int, help="(f) connections (default 1000)")
    parser.add_argument("--seed-sessions", type=int, help="sessions stored for e100k (100000)")
    parser.add_argument(
        "--gateway-log-level",
        help="override the gateway's log level (default: none, i.e. the shipped info level); "
        "only to measure what logging costs",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run each main scenario through a bare aiohttp proxy (the architecture's floor)",
    )
    parser.add_argument(
        "--pg-workers",
        type=int,
        default=2,
        help="workers for (b) and (e) on PostgreSQL beside the one-process SQLite runs (0: skip)",
    )
    parser.add_argument(
        "--pg-dsn",
        default=ADMIN_DSN,
        help="a PostgreSQL server where the run creates (and drops) its database",
    )
    parser.add_argument(
        "--pg-sync",
        choices=("off", "on"),
        default="off",
        help="synchronous_commit of the gateway's PostgreSQL sessions (default off: the "
        "durability of the SQLite side's synchronous=NORMAL)",
    )
    parser.add_argument("--profile", default="", help="scenario keys to profile with py-spy")
    parser.add_argument("--max-minutes", type=float, default=12.0, help="whole-run time limit")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    keys = set((args.only or ALL_KEYS).split(","))
    factor = 0.2 if args.quick else 1.0
    scenarios = tuple(scaled(s, factor) for s in SCENARIOS if s.key in keys)
    ws_default = 200 if args.quick else 1000
    hold = HOLD_SECONDS / 2 if args.quick else HOLD_SECONDS
    return Options(
        scenarios=scenarios,
        reps=args.reps or (1 if args.quick else 3),
        upstream_workers=args.upstream_workers,
        load_workers=args.load_workers,
        cap_seconds=args.cap_seconds or (20.0 if args.quick else 60.0),
        warmup=1,
        ws_count=(args.ws_connections or ws_default) if "f" in keys else 0,
        seed_sessions=args.seed_sessions or (10_000 if args.quick else 100_000),
        log_level=args.gateway_log_level,
        profile=frozenset(k for k in args.profile.split(",") if k),
        max_minutes=args.max_minutes,
        results_dir=RESULTS_DIR,
        floor=args.floor,
        memory_hold_seconds=hold if "g" in keys else 0.0,
        pg_workers=args.pg_workers,
        pg_dsn=args.pg_dsn,
        pg_sync=args.pg_sync,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from(args)
    raise_open_files_limit(OPEN_FILES)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="moltbot-bench-") as root:
        try:
            bench = asyncio.run(run_all(options, Path(root)))
        except KeyboardInterrupt:
            print("interrupted; every child process was stopped", file=sys.stderr)
            return 130
    report = render(bench)
    print("\n" + report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    save_json(bench, options.results_dir / f"bench-{stamp}.json")
    (options.results_dir / f"bench-{stamp}.md").write_text(report + "\n")
    print(f"\nwhole run: {time.monotonic() - started:.0f} s; results in {options.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
