"""The programs a checked tree declares and how each is started: its launchers.

A rule about gevent should fire only in a program that runs under gevent, and the launcher often
decides that: ``gunicorn -k gevent`` patches each worker before it imports the app, ``celery -P
gevent`` and locust patch first, a console script does not. So this reads the files declaring
launchers: packaging metadata at the root (:mod:`._packaging`), Procfiles, Dockerfiles, compose
files, systemd units, supervisord and uWSGI INI files, shell scripts, Makefiles and gunicorn
configs (the commands themselves: :mod:`._commands`). It runs on every ``patchaudit check``:
only files whose name fits are opened, and only their first ``limit`` bytes. The tree is
untrusted: nothing in it is run or imported, Python is read with :mod:`ast` (literals only),
reads go through :mod:`patchaudit._safeio` inside the root, and a malformed file is skipped,
never raised.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .._safeio import reason
from ._commands import GunicornConfig, Launcher, Site, Tree, split_target
from ._discover import walk_named
from ._packaging import declared_frameworks, distributed_modules, ini_items, packaging_launchers

__all__ = ["Launcher", "declared_frameworks", "distributed_modules", "find_launchers"]

_Reader = Callable[[str, str, Tree], Iterator[Launcher]]  # (text, root-relative path, tree)
_FORMAT = re.compile(  # file name -> reader; a name that fits none is never opened
    r"(?P<procfile>Procfile.*)|(?P<docker>(?i:(?:docker|container)file.*|.*\.dockerfile))"
    r"|(?P<compose>(?i:(?:docker-)?compose.*\.ya?ml))|(?P<ini>.*\.(?:ini|conf))"
    r"|(?P<systemd>.*\.service)|(?P<shell>.*\.sh)|(?P<make>(?:GNU)?[Mm]akefile)"
    r"|(?P<gunicorn>gunicorn.*\.py)"
)
_COMPOSE_KEY = re.compile(r"""(\s*)["']?(?:command|entrypoint)["']?\s*:(?:\s+(.*?))?\s*\Z""")
_DOCKER = re.compile(r"\s*(FROM|CMD|ENTRYPOINT|RUN)\s+(.*)", re.IGNORECASE)


def find_launchers(
    root: Path,
    *,
    exclude: Sequence[str] = (),
    respect_gitignore: bool = True,
    limit: int = 4 * 1024 * 1024,
) -> tuple[list[Launcher], list[str]]:
    """Every launcher declared in the tree under root, sorted by source; plus one-line problems.

    Packaging metadata is read at the root only (where pip reads it); the other formats
    anywhere below, pruned as discovery prunes (``exclude``, ``.gitignore``). A gunicorn
    command takes the worker class, ``wsgi_app``, ``preload_app`` and hooks of the config it
    loads (``-c``, else ./gunicorn.conf.py), as gunicorn does; each config is also a launcher
    of its own, since it says which worker the project's gunicorn uses.
    """
    tree = Tree(root, limit)
    try:
        files, problems = walk_named(Path(root), _wanted, exclude, respect_gitignore)
    except OSError as exc:  # the root itself, or an entry that vanished mid-walk
        files, problems = [], [f"cannot look for launchers in {root}: {reason(exc)}"]
    found = set(packaging_launchers(tree))
    configs = set()
    for rel, _ in files:
        kind = _FORMAT.fullmatch(posixpath.basename(rel))
        group = kind.lastgroup if kind is not None else None
        if group == "gunicorn":
            configs.add(rel)  # read after the commands, which may name more configs
        elif group is not None and (text := tree.read(rel)) is not None:
            try:
                found.update(_READERS[group](text, rel, tree))
            except Exception as exc:  # whatever a file holds, it must not stop the run
                problems.append(f"{rel}: not read ({type(exc).__name__})")
    for rel in sorted(configs | tree.referenced):
        named = rel in tree.referenced or posixpath.basename(rel) == "gunicorn.conf.py"
        launcher = _config_launcher(tree.gunicorn_config(rel), named)
        found.update([launcher] if launcher is not None else [])
    return sorted(found, key=_order), sorted(set(problems) | tree.problems)


def _config_launcher(config: GunicornConfig | None, named: bool) -> Launcher | None:
    """A gunicorn config as a launcher: which worker the project's gunicorn uses, even with
    no app in it. A file only named like one (``gunicorn_prod.py``) counts when it sets a
    worker class; one gunicorn loads (``gunicorn.conf.py``, ``-c``) counts for any of
    worker_class, wsgi_app or a hook."""
    if config is None:
        return None
    worker, app = config.settings.get("worker_class"), config.settings.get("wsgi_app")
    if worker is None and (not named or (app is None and not config.hooks)):
        return None
    shown = ", ".join(sorted(f"{k} = {v!r}" for k, (v, _) in config.settings.items()))
    line = (worker or app or (None, min(config.hooks.values(), default=1)))[1]
    module, function = split_target(app[0] if app and isinstance(app[0], str) else "")
    command = f"gunicorn -c {config.path}" + (f" ({shown})" if shown else "")
    source, framework, hooks = f"{config.path}:{line}", config.framework, config.hook_kinds
    return Launcher(
        "gunicorn",
        command,
        source,
        module,
        None,
        function,
        framework,
        config.preload,
        hooks,
        config.preload_at,
    )


def _order(launcher: Launcher) -> tuple[str, int, str, str, str, str]:
    path, _, line = launcher.source.rpartition(":")
    number = int(line) if line.isdigit() else 0
    return path, number, launcher.kind, launcher.command, launcher.path or "", launcher.module or ""


def _wanted(name: str, is_dir: bool) -> bool:
    if is_dir:
        return name != "site-packages" and not name.endswith(".egg-info")
    return _FORMAT.fullmatch(name) is not None


def _site(tree: Tree, rel: str, line: int) -> Site:  # commands in rel run from its folder
    return Site(tree, f"{rel}:{line}", posixpath.dirname(rel))


# -- command files -----------------------------------------------------------------------------


def _ini_launchers(text: str, rel: str, tree: Tree) -> Iterator[Launcher]:
    """uWSGI's ``[uwsgi]`` section; supervisord's ``[program:x]`` ``command=``."""
    options: dict[str, tuple[str, int]] = {}
    for section, key, values in ini_items(text):
        value, line = " ".join(v for _, v in values), values[0][0] if values else 1
        if section == "uwsgi":
            options[key.replace("_", "-")] = (value, line)
        elif section.startswith(("program:", "fcgi-program:")) and key == "command":
            yield from _site(tree, rel, line).shell(value)
    keys = ("module", "wsgi", "w", "wsgi-file", "file", "gevent")
    line = next((options[k][1] for k in keys if k in options), 1)
    settings = {k: v for k, (v, _) in options.items()}
    yield from _site(tree, rel, line).uwsgi(settings, f"uwsgi --ini {rel}")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with their backslash continuations joined, numbered by their first line."""
    start, parts = 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        elif line.lstrip().startswith("#"):  # Docker drops comments inside a continuation
            continue
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        yield start, " ".join([*parts, line])
        parts = []
    if parts:
        yield start, " ".join(parts)


def _line_reader(pattern: str) -> _Reader:
    """A format where each (logical) line that fits ``pattern`` holds one shell command."""
    regex = re.compile(pattern)

    def read(text: str, rel: str, tree: Tree) -> Iterator[Launcher]:
        for number, line in _logical_lines(text):
            if match := regex.match(line):
                yield from _site(tree, rel, number).shell(match[1])

    return read


def _docker(text: str, rel: str, tree: Tree) -> Iterator[Launcher]:
    """CMD, ENTRYPOINT and RUN, shell and exec form; per stage an exec-form ENTRYPOINT takes
    the last exec-form CMD as its arguments, as docker does."""
    stage: dict[str, tuple[int, list[str] | None, str]] = {}
    for number, line in [*_logical_lines(text), (0, "FROM end")]:
        if (match := _DOCKER.match(line)) is None:
            continue
        word, value = match[1].upper(), re.sub(r"^(--\S+\s+)+", "", match[2].strip())
        if word == "FROM":
            entry, cmd = stage.get("ENTRYPOINT"), stage.get("CMD")
            if entry and cmd and entry[1] is not None and cmd[1] is not None:
                at = entry[0] if _site(tree, rel, entry[0]).argv(entry[1]) else cmd[0]
                if combined := _site(tree, rel, at).argv(entry[1] + cmd[1]):
                    yield from combined
                    entry = cmd = None
            stage = {}
            for start, argv, shell in (item for item in (entry, cmd) if item):
                site = _site(tree, rel, start)
                yield from site.argv(argv) if argv is not None else site.shell(shell)
        elif word == "RUN":  # its own --mount=... options are dropped above
            site = _site(tree, rel, number)
            argv = _json_list(value)
            yield from site.argv(argv) if argv is not None else site.shell(value)
        else:
            stage[word] = (number, _json_list(value), value)


def _json_list(value: str) -> list[str] | None:
    """Docker's exec form; None for the shell form (docker falls back to it on bad JSON too)."""
    try:
        argv = json.loads(value) if value.startswith("[") else None
    except ValueError:
        return None
    return argv if isinstance(argv, list) and all(isinstance(a, str) for a in argv) else None


def _compose(text: str, rel: str, tree: Tree) -> Iterator[Launcher]:
    """``command:``/``entrypoint:`` of compose services, read line by line (no YAML library):
    a plain or quoted string, a flow list, a block list, or a folded/literal block."""
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if (match := _COMPOSE_KEY.match(line)) is None:
            continue
        indent, value, block = len(match[1]), _uncomment(match[2] or ""), []
        for following in lines[number:]:
            stripped = following.strip()
            if not stripped or stripped.startswith("#"):
                continue
            depth = len(following) - len(following.lstrip())
            if depth < indent or (depth == indent and (value or not stripped.startswith("- "))):
                break
            block.append(_uncomment(stripped))
        site = _site(tree, rel, number)
        if value.startswith("["):
            yield from site.argv(_flow(value if "]" in value else " ".join([value, *block])))
        elif not value and block and block[0].startswith("- "):
            yield from site.argv([_scalar(item[2:]) for item in block if item.startswith("- ")])
        else:
            folded = [] if re.fullmatch(r"[|>][-+0-9]*", value) else [value]
            yield from site.shell(_scalar(" ".join([*folded, *block])))


def _uncomment(value: str) -> str:
    return value if value[:1] in "\"'" else value.split(" #", 1)[0].strip()


def _scalar(value: str) -> str:
    """A YAML scalar's text: '' doubles a quote in single quotes, JSON-like escapes in double."""
    value = value.strip()
    if len(value) > 1 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) > 1 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value[1:-1]
    return value


def _flow(text: str) -> list[str]:
    """A YAML flow sequence: JSON, or items unquoted or in either quotes."""
    try:
        items = json.loads(text)
    except ValueError:
        inner = text.strip().strip("[]")
        items = re.findall(r""""(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,\s][^,]*""", inner)
        return [_scalar(item) for item in items]
    return [str(item) for item in items] if isinstance(items, list) else []


_READERS: dict[str, _Reader] = {
    "procfile": _line_reader(r"\s*[\w.-]+\s*:\s*(.+)"),  # name: command
    "shell": _line_reader(r"\s*([^#\s].*)"),
    "make": _line_reader(r"\t[@+-]*(.+)"),  # recipe lines; @ - + only change how make runs it
    "systemd": _line_reader(r"\s*ExecStart\s*=\s*[-@:+!]*(.+)"),  # prefixes change how, not what
    "docker": _docker,
    "compose": _compose,
    "ini": _ini_launchers,
}
