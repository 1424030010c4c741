"""`patchaudit rules [CODE]`: list the rules, or explain one."""

from __future__ import annotations

import argparse
import json
import sys

from .._console import EXIT_OK, UsageError, add_format_option

HELP = "list the rules, or explain one"
SPAWNS = False  # prints from the catalogue only: no children to re-parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", nargs="?", help="a rule code such as MPA101, or its name")
    add_format_option(parser, ("text", "json", "markdown"), default="text")


def run(args: argparse.Namespace) -> int:
    from .._docs import rule_as_dict, rule_page, rules_table
    from ..rules import REGISTRY, all_rules

    out = sys.stdout
    if args.code is None:
        if args.format == "json":
            json.dump([rule_as_dict(r) for r in all_rules()], out, indent=2)
            out.write("\n")
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
    else:
        out.write(rule_page(found))
    return EXIT_OK
