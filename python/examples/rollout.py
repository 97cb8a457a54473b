#!/usr/bin/env python3
"""A rollout from Python: a canary, then batches of a quarter of the fleet, stopping at
the first failure; each server reported as it finishes, then the summary. The exit
status is 0 only if every server succeeded.

    python3 examples/rollout.py --cred ops.cred --inventory inventory.toml @web restart-app
"""

import argparse
import sys

import cmdchan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cred", required=True)
    parser.add_argument("--inventory", action="append", default=[])
    parser.add_argument("selector")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    opts = parser.parse_args()

    client = cmdchan.Client(opts.cred, inventory=opts.inventory)
    hosts = client.fanout(opts.selector, "ping")  # who answers at all, first
    reachable = [s.name for s in hosts if s.ok]
    print(f"{len(reachable)} servers answer", file=sys.stderr)

    run = client.fanout(
        opts.selector, opts.command, *opts.args,
        canary=1, batch=max(1, len(reachable) // 4), max_failures=0,
    )
    for server in run:
        if server.ok:
            print(f"{server.name}: ok ({server.duration_ms} ms)")
        elif server.error is not None:
            # Every failure carries the command's code: refused (forbidden, busy, …),
            # unreachable, or not started because the rollout stopped.
            print(f"{server.name}: {server.error.code}: {server.error.message}")
        else:
            print(f"{server.name}: exit {server.exit}: {server.stderr.decode(errors='replace').strip()}")
    summary = run.summary or {}
    if summary.get("stopped"):
        print(f"stopped: {summary['stopped']}", file=sys.stderr)
    return 0 if not summary.get("failed") and not summary.get("not_started") else 1


if __name__ == "__main__":
    sys.exit(main())
