"""`patchaudit doctor`: this machine's limits and TCP settings for load testing.

The options and the run live with the checks (``patchaudit.doctor``, a public API)."""

from __future__ import annotations

import argparse

HELP = "check this machine's limits and TCP settings for load testing"
LAZY = True  # its options import the checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..doctor import add_doctor_arguments

    add_doctor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..doctor import run_doctor

    return run_doctor(args)
