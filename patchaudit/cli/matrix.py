"""`patchaudit matrix`: what the installed gevent patches, and what it does not."""

from __future__ import annotations

import argparse
import sys

from .._console import add_format_option, add_no_color_option, use_color

HELP = "what the installed gevent patches, and what it does not"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_format_option(parser, ("table", "markdown", "json"), default="table")
    add_no_color_option(parser)


def run(args: argparse.Namespace) -> int:
    from .._matrix import main_matrix

    return main_matrix(args.format, use_color(sys.stdout, args.no_color), sys.stdout)
