"""`python -m patchaudit.harness [options]`: `patchaudit bench` without the main CLI."""

from __future__ import annotations

import argparse
import sys

from .cli import EXIT_USAGE, PROG, add_bench_arguments, run_bench


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage block
        print(f"{PROG}: error: {message} (see `{PROG} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description="Serve one page patched and unpatched, and load it.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
