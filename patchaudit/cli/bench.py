"""`patchaudit bench`: serve one page patched and unpatched and load it.

The options, their validation and the run live with the harness (``patchaudit.harness.cli``,
also run by ``python -m patchaudit.harness``); it handles its own interrupts (partial results).
"""

from __future__ import annotations

import argparse

HELP = (
    "serve one page patched and unpatched and load it (the experiment of "
    '"gevent: the Good, the Bad, the Ugly")'
)
LAZY = True  # its options import the harness


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..harness import add_bench_arguments

    add_bench_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..harness import run_bench

    return run_bench(args)
