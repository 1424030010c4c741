"""`patchaudit demo`: each broken demo app next to its fix under the same load.

The options and the run live with the harness (``patchaudit.harness.demo``); it handles its
own interrupts (it shows the apps that finished)."""

from __future__ import annotations

import argparse

HELP = "serve each broken demo app next to its fix, same load"
LAZY = True  # its options import the harness


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..harness.demo import add_demo_arguments

    add_demo_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..harness.demo import run_demo

    return run_demo(args)
