"""How far the relay's dashboard page falls behind the stream: headless
Chromium on `GET /` of a relay in stream mode, fed 10 000 events a minute
for a minute (or --seconds), the newest row the page shows sampled four
times a second against when each event was published. Prints the lag over
the first and the last 10 s, the worst sample, and the page's JS heap.

Usage: /usr/bin/python3 bench/dashboard_lag.py [--cli build/mailagent]
       [--seconds 60] [--out build/bench-dashboard]

It is tests/relay/dashboard_test.py's `lag` scenario run for longer (the
test runs 20 s and only checks that the lag does not grow); the servers are
started on free loopback ports and stopped at the end.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))
import dashboard_test  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "mailagent"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench-dashboard"))
    args = ap.parse_args()
    sys.argv = [sys.argv[0], "lag", "--cli", args.cli, "--out", args.out,
                "--seconds", str(args.seconds)]
    return dashboard_test.main()


if __name__ == "__main__":
    sys.exit(main())
