"""python -m tests.demo [--check | --func PATH]: the local demo world (scripts/start runs this).

--check     build the world, drive the app's functions in this process until the sample onboarding is
            verified; the last line is `demo: <id> verified in <s> s` (exit 0), else the reason (exit 1)
--func PATH build the world, run `PATH start` (Azure Functions Core Tools) against it, onboard the sample
            over HTTP, print the API's curl examples and serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="drive the app's functions in-process until verified")
    mode.add_argument("--func", metavar="PATH", help="run Functions Core Tools (func) against the world")
    args = parser.parse_args(argv)

    from tests.demo import check, serve
    from tests.demo.world import demo_world, describe

    check.quiet_logs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the emulators and Azurite on the way out
    started = time.monotonic()
    try:
        with demo_world() as world:
            print(f"demo: world up in {time.monotonic() - started:.1f} s")
            for line in describe(world):
                print(f"  {line}")
            if args.check:
                check.run(world)
            else:
                return serve.run(world, args.func)
    except (check.DemoFailed, serve.DemoFailed) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
