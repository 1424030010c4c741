"""`patchaudit matrix`: the simple list of what monkey-patching replaces and what it does not.

The replaced and removed names come from the *installed* gevent (:func:`load_patch_lists` runs
``patch_all()`` in a child interpreter), so the list is right for whatever gevent, Python and
platform the user has. The "not covered" list, which no introspection can produce, is the data
file ``patchaudit/data/not_covered.toml`` (sourced from the failure-mode knowledge base).

``python -m patchaudit._matrix`` regenerates ``docs/patch-matrix.md``; ``--check`` only reports
whether it is up to date.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from ._gevent_patches import PatchListError, PatchLists, load_patch_lists
from .reporters._common import buffered_console

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DOCS_PATH",
    "FORMATS",
    "REGENERATE",
    "build_matrix",
    "header_line",
    "load_not_covered",
    "main_matrix",
    "parse_header",
    "render",
    "write",
]

FORMATS = ("table", "md", "json")
#: Where the generated Markdown lives, relative to the repository root.
DOCS_PATH = Path("docs") / "patch-matrix.md"
#: The command that regenerates :data:`DOCS_PATH` (run from the repository root).
REGENERATE = "python -m patchaudit._matrix"

_WIDTH = 100  # table width whenever the stream is not a terminal, so output is reproducible
_EXIT_OK, _EXIT_USAGE = 0, 2  # as in patchaudit._cli
_HEADER = re.compile(
    r"^Generated from gevent (?P<gevent>\S+) on (?P<implementation>\S+) (?P<python>\d+\.\d+) "
    r"\((?P<platform>[^)]*)\)",
    re.MULTILINE,
)
_ENTRY_KEYS = {"what", "use_instead", "note", "failure_mode", "rules"}


# --- data ------------------------------------------------------------------------------------


def load_not_covered() -> list[dict[str, Any]]:
    """The entries of ``data/not_covered.toml``, validated, in file order.

    Each is ``{what, use_instead: [str], note, failure_mode, rules: [str]}``; raises
    ``ValueError`` naming the entry when the file is malformed.
    """
    text = resources.files("patchaudit.data").joinpath("not_covered.toml").read_text("utf-8")
    raw = tomllib.loads(text).get("not_covered")
    if not isinstance(raw, list) or not raw:
        raise ValueError("not_covered.toml: expected a non-empty [[not_covered]] array")
    entries = []
    for number, item in enumerate(raw, start=1):
        where = f"not_covered.toml entry {number}"
        unknown = set(item) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("what", "failure_mode"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"{where}: `{key}` must be a non-empty string")
        for key in ("use_instead", "rules"):
            value = item.get(key)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}: `{key}` must be a list of strings")
        if not item["use_instead"]:
            raise ValueError(f"{where}: `use_instead` must not be empty")
        if not isinstance(item.get("note", ""), str):
            raise ValueError(f"{where}: `note` must be a string")
        entries.append(
            {
                "what": item["what"],
                "use_instead": list(item["use_instead"]),
                "note": item.get("note", ""),
                "failure_mode": item["failure_mode"],
                "rules": list(item["rules"]),
            }
        )
    return entries


def _pairs(lists: PatchLists, option: str) -> set[tuple[str, str]]:
    return {(mod, name) for mod, names in lists.by_option.get(option, {}).items() for name in names}


def _option_order(lists: PatchLists) -> list[str]:
    """``patch_all`` keywords in the order ``patch_all`` applied them, then the rest.

    ``call_order`` names functions (``patch_selectors`` belongs to ``select=``, found through
    the module it patched); an option whose names all appear under another (``dns`` within
    ``socket``) follows that option. Options that ran no patcher (``Event``, ``aggressive``,
    ``sys`` when false) come last, sorted, so the output never depends on dict order.
    """
    within = {opt: _within(lists, opt) for opt in lists.by_option}
    order: list[str] = []

    def add(opt: str) -> None:
        if opt in order:
            return
        order.append(opt)
        for other, parent in sorted(within.items()):
            if parent == opt:
                add(other)

    for func in lists.call_order:
        opt = func.removeprefix("patch_")
        if opt not in lists.by_option and opt not in lists.options:
            opt = next((o for o, mods in sorted(lists.by_option.items()) if opt in mods), "")
        if opt and within.get(opt) is None:
            add(opt)
    for opt in sorted({*lists.options, *lists.by_option}):
        add(within.get(opt) or opt)
        add(opt)
    return order


def _within(lists: PatchLists, option: str) -> str | None:
    """The option whose names strictly contain all of ``option``'s (``socket`` for ``dns``)."""
    mine = _pairs(lists, option)
    if not mine:
        return None
    parents = [o for o in lists.by_option if o != option and mine < _pairs(lists, o)]
    return min(parents, key=lambda o: (len(_pairs(lists, o)), o)) if parents else None


def _owners(lists: PatchLists, order: Sequence[str]) -> dict[tuple[str, str], str]:
    """(module, name) -> the most specific option listing it (``dns`` rather than ``socket``)."""
    owners: dict[tuple[str, str], str] = {}
    for opt in sorted(lists.by_option, key=lambda o: (len(_pairs(lists, o)), order.index(o))):
        for pair in _pairs(lists, opt):
            owners.setdefault(pair, opt)
    return owners


def build_matrix(lists: PatchLists) -> dict[str, Any]:
    """Everything ``patchaudit matrix`` shows, as a JSON-able dict.

    Keys: ``gevent_version``, ``python_version``, ``implementation``, ``platform``;
    ``options`` (one per ``patch_all`` keyword, in patch order: ``option``, ``default``, ``ran``
    (its patcher ran), ``within`` (the option it shares all its names with, or None),
    ``replaced``/``removed`` counts); ``patched`` (``option``, ``default``, ``module``, ``name``,
    ``replacement``: the ``module.qualname`` now in place, None if gevent did not say);
    ``removed`` (``option``, ``module``, ``name``); ``unrecorded`` (``module``, ``name``,
    ``replacement``: patched but absent from ``gevent.monkey.saved``); ``not_covered`` (the data
    file entries). Names are sorted by module and name within each option.
    """
    order = _option_order(lists)
    owners = _owners(lists, order)
    removed_pairs = {(mod, name) for mod, names in lists.removed.items() for name in names}
    rank = {opt: i for i, opt in enumerate(order)}

    def sort_key(pair: tuple[str, str]) -> tuple[int, str, str]:
        return (rank[owners[pair]], pair[0], pair[1])

    patched = []
    for mod, name in sorted(set(owners) - removed_pairs, key=sort_key):
        opt = owners[(mod, name)]
        patched.append(
            {
                "option": opt,
                "default": lists.options.get(opt),
                "module": mod,
                "name": name,
                "replacement": lists.replacements.get(mod, {}).get(name),
            }
        )
    removed = []
    for mod, name in sorted(removed_pairs, key=lambda p: (rank.get(owners.get(p, ""), -1), *p)):
        removed.append({"option": owners.get((mod, name)), "module": mod, "name": name})
    options = []
    for opt in order:
        mine = {p for p, owner in owners.items() if owner == opt}
        options.append(
            {
                "option": opt,
                "default": lists.options.get(opt),
                "ran": opt in lists.by_option,
                "within": _within(lists, opt),
                "replaced": len(mine - removed_pairs),
                "removed": len(mine & removed_pairs),
            }
        )
    unrecorded = [
        {"module": mod, "name": name, "replacement": items[name]}
        for mod, items in sorted(lists.unrecorded.items())
        for name in sorted(items)
    ]
    return {
        "gevent_version": lists.gevent_version,
        "python_version": lists.python_version,
        "implementation": lists.implementation or "Python",
        "platform": lists.platform,
        "options": options,
        "patched": patched,
        "removed": removed,
        "unrecorded": unrecorded,
        "not_covered": load_not_covered(),
    }


# --- rendering -------------------------------------------------------------------------------


def render(
    matrix: Mapping[str, Any],
    fmt: str,
    *,
    color: bool = False,
    width: int | None = None,
    encoding: str = "utf-8",
) -> str:
    """``matrix`` as text: ``table`` (rich; plain box-drawing text when ``color`` is false),
    ``md`` (the docs/patch-matrix.md document) or ``json``.

    ``width``/``encoding`` only affect ``table``: the width defaults to 100 columns, and a
    non-UTF encoding makes rich draw the boxes in ASCII.
    """
    if fmt == "json":
        return json.dumps(matrix, indent=2, ensure_ascii=False) + "\n"
    if fmt == "md":
        return _markdown(matrix)
    if fmt == "table":
        return _table(matrix, color=color, width=width or _WIDTH, encoding=encoding)
    raise ValueError(f"unknown matrix format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _python_minor(matrix: Mapping[str, Any]) -> str:
    return ".".join(str(matrix["python_version"]).split(".")[:2])


def header_line(matrix: Mapping[str, Any]) -> str:
    """The provenance line of the Markdown document (Python as major.minor: patch releases of
    Python do not change what gevent patches, so they should not make the file stale)."""
    return (
        f"Generated from gevent {matrix['gevent_version']} on {matrix['implementation']} "
        f"{_python_minor(matrix)} ({matrix['platform'] or 'unknown platform'}) by "
        f"`{REGENERATE}`; run it again after upgrading gevent."
    )


def parse_header(text: str) -> dict[str, str] | None:
    """``{gevent, implementation, python, platform}`` from a generated document, or None."""
    found = _HEADER.search(text)
    return found.groupdict() if found else None


def _replacement_text(replacement: str | None) -> str:
    """How a replacement reads to a person: ``builtins.NoneType`` is the value ``None``."""
    if replacement is None:
        return "(not reported)"
    if replacement == "builtins.NoneType":
        return "None"
    if replacement.startswith("builtins."):
        return f"a {replacement.removeprefix('builtins.')} value"
    return replacement


def _option_note(option: Mapping[str, Any]) -> str | None:
    if option["within"]:
        return (
            f"Applied together with `{option['within']}=`: these names are also listed there "
            "and are replaced only when both are true."
        )
    if option["ran"] and not option["replaced"] and not option["removed"]:
        return "Nothing is replaced: the patcher runs but is a no-op on this gevent and Python."
    return None


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`"


def _md_replacement(replacement: str | None) -> str:
    text = _replacement_text(replacement)
    if replacement is None or (
        replacement.startswith("builtins.") and replacement != "builtins.NoneType"
    ):
        return text
    return _code(text)


def _use_instead(entry: Mapping[str, Any], *, code: bool) -> str:
    apis = ", ".join(_code(api) if code else api for api in entry["use_instead"])
    note = entry["note"] if code else entry["note"].replace("`", "")
    return f"{apis}. {note}" if note else apis


def _md_rules(codes: Sequence[str]) -> str:
    return ", ".join(f"[{c}](rules/{c}.md)" for c in codes) or "none"


def _markdown(matrix: Mapping[str, Any]) -> str:
    out = [
        "# What gevent's monkey-patching replaces, and what it does not",
        "",
        header_line(matrix),
        "`patchaudit matrix` prints the same lists for the gevent installed where it runs.",
        "",
        "`gevent.monkey.patch_all()` with its default arguments replaces the names below with "
        "gevent's cooperative versions, one section per keyword in the order `patch_all` applies "
        "them. Everything in the last table stays blocking after patching: use the API or "
        "library step given there instead.",
        "",
        "## Replaced by `patch_all()`",
    ]
    by_option: dict[str, list[Mapping[str, Any]]] = {}
    for row in matrix["patched"]:
        by_option.setdefault(row["option"], []).append(row)
    idle_modifiers, off_by_default = [], []
    for option in matrix["options"]:
        opt = option["option"]
        if not option["ran"]:
            (idle_modifiers if option["default"] else off_by_default).append(option)
            continue
        out += ["", f"### `{opt}={option['default']}`"]
        note = _option_note(option)
        if note:
            out += ["", note]
        rows = by_option.get(opt, [])
        if rows:
            out += ["", "| module | name | replaced by |", "|---|---|---|"]
            out += [
                f"| {_code(r['module'])} | {_code(r['name'])} | "
                f"{_md_cell(_md_replacement(r['replacement']))} |"
                for r in rows
            ]
        elif option["removed"]:
            out += ["", "Nothing is replaced; see the removed names below."]
    if idle_modifiers or off_by_default:
        out.append("")
    if idle_modifiers:
        names = ", ".join(f"`{o['option']}={o['default']}`" for o in idle_modifiers)
        out.append(f"Keywords that run no patcher of their own: {names}.")
    if off_by_default:
        names = ", ".join(f"`{o['option']}={o['default']}`" for o in off_by_default)
        out.append(f"Not applied with the defaults: {names}.")

    out += ["", "## Removed by aggressive patching", ""]
    if matrix["removed"]:
        aggressive = next(
            (o["default"] for o in matrix["options"] if o["option"] == "aggressive"), None
        )
        intro = "With `aggressive=True`" + (" (the default)" if aggressive else "")
        out += [
            f"{intro}, `patch_all()` deletes these names: code that uses them fails with "
            "`AttributeError`.",
            "",
            "| option | module | name |",
            "|---|---|---|",
        ]
        out += [
            f"| {_code(str(r['option']))} | {_code(r['module'])} | {_code(r['name'])} |"
            for r in matrix["removed"]
        ]
    else:
        out.append("Nothing is removed by this gevent.")

    if matrix["unrecorded"]:
        out += [
            "",
            "## Also replaced, not recorded in `gevent.monkey.saved`",
            "",
            "`gevent.monkey.get_original()` cannot return the originals of these.",
            "",
            "| module | name | replaced by |",
            "|---|---|---|",
        ]
        out += [
            f"| {_code(r['module'])} | {_code(r['name'])} | "
            f"{_md_cell(_md_replacement(r['replacement']))} |"
            for r in matrix["unrecorded"]
        ]

    out += [
        "",
        "## Not covered by monkey-patching",
        "",
        "These stay blocking (or native) after `patch_all()`. Failure modes are the ids of "
        "patchaudit's failure-mode catalogue; the rules flag the problem in `patchaudit check`.",
        "",
        "| what | use instead | failure mode | detected by |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {_md_cell(e['what'])} | {_md_cell(_use_instead(e, code=True))} | "
        f"{e['failure_mode']} | {_md_rules(e['rules'])} |"
        for e in matrix["not_covered"]
    ]
    return "\n".join(out) + "\n"


def _table(matrix: Mapping[str, Any], *, color: bool, width: int, encoding: str) -> str:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console, buffer = buffered_console(color=color, width=width, encoding=encoding)

    def table(title: str, *columns: tuple[str, int | None]) -> Table:
        """Columns are (header, ratio); a ratio of None means "never wrap"."""
        t = Table(title=title, title_justify="left", title_style="bold", box=box.SQUARE)
        for header, ratio in columns:
            t.add_column(
                header, header_style="bold", ratio=ratio, no_wrap=ratio is None, overflow="fold"
            )
        return t

    python = f"{matrix['implementation']} {matrix['python_version']}"
    console.print(
        Text(
            f"gevent {matrix['gevent_version']} on {python} ({matrix['platform'] or '?'})",
            style="bold",
        )
    )
    console.print()

    replaced = table("Replaced by patch_all()", ("option", None), ("name", 2), ("replaced by", 3))
    by_option: dict[str, list[Mapping[str, Any]]] = {}
    for row in matrix["patched"]:
        by_option.setdefault(row["option"], []).append(row)
    idle = []
    for option in matrix["options"]:
        opt = option["option"]
        if not option["ran"]:
            idle.append(f"{opt}={option['default']}")
            continue
        label = f"{opt}={option['default']}"
        if option["within"]:
            label += f"\n(with {option['within']}=)"
        rows = by_option.get(opt, [])
        if not rows:
            note = "(see removed)" if option["removed"] else "(no-op)"
            replaced.add_row(Text(label, style="bold cyan"), Text(note, style="dim"), "")
        for i, r in enumerate(rows):
            replaced.add_row(
                Text(label if i == 0 else "", style="bold cyan"),
                f"{r['module']}.{r['name']}",
                Text(_replacement_text(r["replacement"]), style="green"),
            )
        replaced.rows[-1].end_section = True
    console.print(replaced)
    if idle:
        console.print(Text("Keywords that patch nothing themselves: " + ", ".join(idle)))
    console.print()

    if matrix["removed"]:
        removed = table("Removed by aggressive patching", ("option", None), ("name", None))
        for r in matrix["removed"]:
            removed.add_row(str(r["option"]), Text(f"{r['module']}.{r['name']}", style="red"))
        console.print(removed)
        console.print()
    if matrix["unrecorded"]:
        unrecorded = table(
            "Also replaced, not recorded in gevent.monkey.saved", ("name", 1), ("replaced by", 1)
        )
        for r in matrix["unrecorded"]:
            unrecorded.add_row(f"{r['module']}.{r['name']}", _replacement_text(r["replacement"]))
        console.print(unrecorded)
        console.print()

    missing = table(
        "Not covered by monkey-patching",
        ("what", 2),
        ("use instead", 3),
        ("FM", None),
        ("rules", None),
    )
    for e in matrix["not_covered"]:
        missing.add_row(
            e["what"].replace("`", ""),
            Text(_use_instead(e, code=False)),
            e["failure_mode"],
            Text("\n".join(e["rules"]) or "-", style="yellow"),
            end_section=True,
        )
    console.print(missing)
    return buffer.getvalue()


# --- entry points ----------------------------------------------------------------------------


def main_matrix(
    fmt: str,
    color: bool,
    stream: TextIO,
    *,
    python: str | None = None,
    cache_dir: Path | None = None,
) -> int:
    """``patchaudit matrix --format FMT``: write the matrix to ``stream``; return the exit code.

    ``color`` only matters for ``table`` (the caller decides: tty, ``--no-color``,
    ``NO_COLOR``). ``python`` picks the interpreter whose gevent is described (default: this
    one). Errors are one line on stderr and exit code 2.
    """
    from .reporters._common import isatty, write_text

    if fmt not in FORMATS:
        print(f"patchaudit: error: unknown format {fmt!r} ({', '.join(FORMATS)})", file=sys.stderr)
        return _EXIT_USAGE
    try:
        matrix = build_matrix(load_patch_lists(python, cache_dir=cache_dir))
    except PatchListError as exc:
        print(f"patchaudit: error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    width = None
    if fmt == "table" and isatty(stream):
        import shutil

        width = shutil.get_terminal_size((_WIDTH, 24)).columns or _WIDTH
    encoding = getattr(stream, "encoding", None) or "utf-8"
    write_text(stream, render(matrix, fmt, color=color, width=width, encoding=encoding))
    return _EXIT_OK


def write(path: Path | str = DOCS_PATH, lists: PatchLists | None = None) -> Path:
    """Regenerate the Markdown document at ``path`` from the installed gevent; return the path."""
    target = Path(path)
    text = render(build_matrix(lists or load_patch_lists()), "md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m patchaudit._matrix",
        description=f"Regenerate {DOCS_PATH.as_posix()} from the installed gevent.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=DOCS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    try:
        lists = load_patch_lists()
    except PatchListError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    if args.check:
        expected = render(build_matrix(lists), "md")
        try:
            current = args.path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != expected:
            print(f"{args.path} is out of date; run `{REGENERATE}`", file=sys.stderr)
            return 1
        return _EXIT_OK
    print(write(args.path, lists))
    return _EXIT_OK


if __name__ == "__main__":
    sys.exit(_main())
