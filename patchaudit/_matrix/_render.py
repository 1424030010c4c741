"""The matrix as text: the rich table, the docs/patch-matrix.md document, and JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..reporters._common import buffered_console, table_fits
from ._build import _HEADER, _WIDTH, FORMATS, REGENERATE

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
        """Columns are (header, ratio); a ratio of None means "never wrap". The ratios only
        apply when ``table_fits`` finds no layout that keeps every word whole."""
        t = Table(title=title, title_justify="left", title_style="bold", box=box.SQUARE)
        for header, ratio in columns:
            t.add_column(
                header, header_style="bold", ratio=ratio, no_wrap=ratio is None, overflow="fold"
            )
        return t

    def show(t: Table) -> None:
        if table_fits(console, t):
            for column in t.columns:
                column.ratio = None  # the widths are set, or rich's natural ones fit
        console.print(t)

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
    show(replaced)
    if idle:
        console.print(Text("Keywords that patch nothing themselves: " + ", ".join(idle)))
    console.print()

    if matrix["removed"]:
        removed = table("Removed by aggressive patching", ("option", None), ("name", None))
        for r in matrix["removed"]:
            removed.add_row(str(r["option"]), Text(f"{r['module']}.{r['name']}", style="red"))
        show(removed)
        console.print()
    if matrix["unrecorded"]:
        unrecorded = table(
            "Also replaced, not recorded in gevent.monkey.saved", ("name", 1), ("replaced by", 1)
        )
        for r in matrix["unrecorded"]:
            unrecorded.add_row(f"{r['module']}.{r['name']}", _replacement_text(r["replacement"]))
        show(unrecorded)
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
    show(missing)
    return buffer.getvalue()
