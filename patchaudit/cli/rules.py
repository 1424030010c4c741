"""`patchaudit rules [CODE]`: list the rules, or explain one."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .._console import (
    EXIT_OK,
    UsageError,
    add_format_option,
    add_no_color_option,
    isatty,
    terminal_width,
    use_color,
)

HELP = "list the rules, or explain one"
SPAWNS = False  # prints from the catalogue only: no children to re-parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", nargs="?", help="a rule code such as MPA101, or its name")
    add_format_option(parser, ("text", "json", "markdown"), default="text")
    add_no_color_option(parser)


def run(args: argparse.Namespace) -> int:
    from .._docs import rule_as_dict, rule_page, rules_table
    from ..rules import REGISTRY, all_rules

    out = sys.stdout
    if args.code is None:
        if args.format == "json":
            json.dump([rule_as_dict(r) for r in all_rules()], out, indent=2)
            out.write("\n")
        elif args.format == "text" and isatty(out):
            write_listing(out, all_rules())
        else:
            out.write(rules_table(all_rules(), markdown=args.format == "markdown"))
        return EXIT_OK
    wanted = args.code.strip()
    found = REGISTRY.get(wanted.upper()) or next(
        (r for r in REGISTRY.values() if r.name == wanted.lower()), None
    )
    if found is None:
        raise UsageError(f"unknown rule {wanted!r} (list them with `patchaudit rules`)")
    if args.format == "json":
        json.dump(rule_as_dict(found), out, indent=2)
        out.write("\n")
    elif args.format == "text" and isatty(out):
        write_page(out, rule_page(found), no_color=args.no_color)
    else:  # piped, or asked for markdown: the page's source, as in docs/rules/
        out.write(rule_page(found))
    return EXIT_OK


def write_page(out: TextIO, page: str, *, no_color: bool) -> None:
    """A rule's Markdown page rendered for the terminal ``out`` (headings, lists, code)."""
    from rich.markdown import Markdown

    from ..reporters._common import buffered_console, write_text

    encoding = getattr(out, "encoding", None) or "utf-8"
    width = terminal_width(out, 100)
    console, buffer = buffered_console(
        color=use_color(out, no_color), width=width, encoding=encoding
    )
    # The page's links are relative to docs/rules/: shown as text, not as terminal hyperlinks.
    console.print(Markdown(page, hyperlinks=False, code_theme="ansi_dark"))
    # rich pads every line to the width; trailing blanks only get in the way of copy and paste
    write_text(out, "\n".join(line.rstrip() for line in buffer.getvalue().split("\n")))


def write_listing(out: TextIO, rules: list[Any]) -> None:
    """The rules, one a line as in a pipe, each summary wrapped under itself on a terminal."""
    from ..reporters._common import buffered_console, hanging, write_text

    encoding = getattr(out, "encoding", None) or "utf-8"
    console, buffer = buffered_console(
        color=False, width=terminal_width(out, 100), encoding=encoding
    )
    width = max(len(r.name) for r in rules)
    for r in rules:
        hanging(console, f"{r.code}  {r.name:<{width}}  {r.severity.value:<7}  ", r.summary, "")
    write_text(out, buffer.getvalue())
