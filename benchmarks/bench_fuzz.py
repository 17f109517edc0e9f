"""The long fuzzing profile: schemathesis against a real server's own ``/openapi.json``.

The same harness as ``tests/test_fuzz_api.py`` (tests/apifuzz.py: a real server with API
keys on, seeded with files, batches in every state, a dead-letter webhook and a throwaway
key; every operation fuzzed as a normal key and as an admin key; cancel and the
server-wide limits last), with many more examples per operation or a time budget.

Prints the operations covered, the requests sent, the failures found (by kind, each with
one reproduction: method, URL, body, and the last line of the server's traceback) and the
duration. Exits 0 whatever it finds (it measures; the test suite's quick profile is the
gate); ``--keep DIR`` keeps the HAR and NDJSON reports and the server's log.

Run: ``.venv/bin/python benchmarks/bench_fuzz.py [--max-examples 500] [--seconds 600]``
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import apifuzz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-examples", type=int, default=500, help="examples per operation and phase"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="time budget of the fuzzing (all runs together; fuzzing repeats until spent)",
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one")
    parser.add_argument("--phases", default=apifuzz.PHASES, help="schemathesis phases")
    parser.add_argument("--shrink", action="store_true", help="shrink failing examples")
    parser.add_argument("--keep", type=Path, default=None, help="keep reports and logs here")
    args = parser.parse_args()
    # SIGTERM ends the run like Ctrl-C: the server (its own session) is stopped, not leaked
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    profile = apifuzz.Profile(
        max_examples=args.max_examples,
        seconds=args.seconds,
        phases=args.phases,
        seed=args.seed,
        shrink=args.shrink,
    )

    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    try:
        target = apifuzz.Target(tmp / "server")
        setup = time.time() - started
        try:
            report = apifuzz.fuzz(target, profile, tmp / "reports")
            down = target.alive()
        finally:
            target.close()
        print_report(report, profile, setup, down)
    finally:
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
            print(f"reports and server log kept in {args.keep}")
        shutil.rmtree(tmp, ignore_errors=True)


def print_report(
    report: apifuzz.Report, profile: apifuzz.Profile, setup: float, down: str | None
) -> None:
    covered = len(report.operations) - len(report.untested())
    kinds = Counter(f.kind for f in report.findings.values())
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses.items()))
    print(
        f"profile: {profile.max_examples} examples per operation and phase"
        f"{f', {profile.seconds:.0f} s budget' if profile.seconds else ''}; "
        f"phases {profile.phases}; seed {report.seed}"
    )
    print(f"operations covered:  {covered}/{len(report.operations)}")
    print(
        f"requests sent:       {report.total_requests} "
        f"({report.total_requests / max(report.duration, 1e-9):.0f}/s)"
    )
    print(f"responses:           {statuses}")
    by_kind = ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "none"
    print(f"failures found:      {len(report.findings)} distinct ({by_kind})")
    print(f"duration:            {report.duration:.0f} s fuzzing (+ {setup:.0f} s server setup)")
    print(f"server afterwards:   {down or 'up, /health answers 200'}")
    for line in report.runs:
        print(f"  run {line}")
    if report.untested():
        print(f"operations never called: {', '.join(report.untested())}")
    if report.schema_gaps:
        print("request bodies supplemented (the server's schema lacks them):")
        for gap in report.schema_gaps:
            print(f"  {gap}")
    for finding in sorted(report.findings.values(), key=lambda f: (f.kind, f.operation)):
        print(finding.describe())


if __name__ == "__main__":
    main()
