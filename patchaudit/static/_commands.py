"""What a command line starts: gunicorn, celery, uwsgi, locust, ``python -m gevent.monkey``.

What makes a program run under gevent is often its launcher (``gunicorn -k gevent``, ``celery
-P gevent``, locust), not a ``patch_all()`` in its code. This reads the command lines that
:mod:`._launchers` finds, and the gunicorn config files they load. The tree is untrusted:
commands are only tokenised, configs are parsed with :mod:`ast` and only literal values are
read, every path stays inside the root, and malformed input is skipped, never raised.
"""

from __future__ import annotations

import ast
import os
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._safeio import FileTooLargeError, read_regular, resolve_within

__all__ = ["EXPRESSION", "HOOKS", "GunicornConfig", "Launcher", "Site", "Tree"]


@dataclass(frozen=True)
class Launcher:
    """One way the project starts a program, and whether that way patches first."""

    kind: str  # console-script gui-script gunicorn celery uwsgi locust gevent-monkey python
    command: str  # one line for users: "gunicorn -k gevent app:app"
    source: str  # root-relative posix path and line that declares it: "Procfile:1"
    module: str | None  # dotted module it starts; None when it names a file
    path: str | None  # root-relative .py file it runs, else None
    function: str | None  # the name after ':' ("app:create_app()" -> "create_app"), else None
    framework: str | None  # "gevent"/"eventlet" when the launcher patches before the target
    preload: bool | None = None  # gunicorn: --preload/preload_app; None for an expression
    hooks: tuple[tuple[str, str], ...] = ()  # gunicorn config: (hook, "master" | "worker")
    preload_at: str | None = None  # gunicorn: "path:line" of the preload_app setting, if any


# gunicorn's server hooks by the process they run in (arbiter.py, workers/base.py). worker_exit
# runs in the worker: spawn_worker calls it in the child, after the worker's loop ends.
_MASTER = "on_starting on_reload when_ready pre_fork pre_exec child_exit nworkers_changed on_exit"
_WORKER = "post_fork post_worker_init worker_int worker_abort worker_exit pre_request post_request"
HOOKS = dict.fromkeys(_MASTER.split(), "master") | dict.fromkeys(_WORKER.split(), "worker")
HOOKS["ssl_context"] = "worker"  # called when a worker wraps its sockets
# Options without a value that may come right before the app; any other option takes the next
# token as its value unless that starts with "-" (but "-" alone, stdout, is a value).
_GUNICORN_FLAGS = frozenset(
    "--preload --reload --spew --check-config --print-config --daemon -D --no-sendfile -R "
    "--reuse-port --enable-stdio-inheritance --log-syslog --capture-output --proxy-protocol "
    "--disable-redirect-access-to-syslog --strip-header-spaces -v --version -h --help".split()
)
_CELERY_FLAGS = frozenset("-C --no-color -q --quiet -E -B -D --detach --purge".split())
_TOOLS = frozenset(  # `python -m` of tools, not of the project's programs
    "pip venv virtualenv ensurepip compileall py_compile build twine pipx pytest unittest "
    "coverage tox nox mypy ruff black flake8 isort pre_commit pydoc pdb site http.server".split()
)
_SHELLS = frozenset("sh bash dash zsh ash ksh".split())
_PREFIXES = frozenset(
    "exec env nohup time dumb-init tini tini-static ddtrace-run then do else { ! ( ".split()
)
_RUNNERS = frozenset("poetry pipenv uv pdm hatch rye".split())  # `<runner> run ...`
_RUNNER_VALUED = frozenset(
    "--with --with-editable --with-requirements --python -p --extra --group --only-group "
    "--package --project --directory --env-file --index --index-url -C -P -e".split()
)
# Every launcher starts one of these (`python3.11 -m`, `pypy3`, `gunicorn`...): a line without any
# of them is not worth tokenising.
# A command word as a whole token (`python3 -m x`, `/usr/bin/gunicorn`, `["celery", ...]`), not
# inside a path such as `lib/python3.11/site-packages`: a Makefile names hundreds of those, and
# each line that passes is tokenised.
_COMMAND_WORD = re.compile(
    r"(?:python|pypy|gunicorn|celery|uwsgi|locust)[\w.-]*(?=[\s;&|()`\"',\]]|\Z)"
)
_PYTHON = re.compile(r"python(?:\d+(?:\.\d+)?)?[a-z]?\Z|pypy3?\Z")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
_OPERATORS = frozenset("();|&")


# A config value that is not a literal: unknown, never evaluated.
EXPRESSION: object = type("Expression", (), {"__repr__": lambda self: "<expression>"})()


def split_target(value: str) -> tuple[str | None, str | None]:
    """``pkg.mod:obj.attr`` / ``app:create_app()`` / ``pkg.mod`` -> (module, name after ':')."""
    module, _, name = value.strip().partition(":")
    name = name.split("(", 1)[0].strip()
    if not _DOTTED.match(module):
        return None, None
    return module, name if _DOTTED.match(name) else None


def worker_framework(value: object) -> str | None:
    """gevent/eventlet for a gunicorn worker class (``gevent``, ``egg:gunicorn#eventlet``,
    ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker``), None for any other."""
    lower = value.lower() if isinstance(value, str) else ""
    return "gevent" if "gevent" in lower else "eventlet" if "eventlet" in lower else None


def parse_literal(node: ast.expr) -> object:
    """The value of a literal node; EXPRESSION for anything else (never evaluated)."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return EXPRESSION


@dataclass
class GunicornConfig:
    """The literal settings and the server hooks of one gunicorn config file."""

    path: str
    settings: dict[str, tuple[object, int]] = field(default_factory=dict)  # value, line
    hooks: dict[str, int] = field(default_factory=dict)  # hook name -> line

    @property
    def framework(self) -> str | None:
        return worker_framework(self.settings.get("worker_class", (None, 0))[0])

    @property
    def preload_at(self) -> str | None:
        line = self.settings.get("preload_app", (None, 0))[1]
        return f"{self.path}:{line}" if line else None

    @property
    def preload(self) -> bool | None:
        value = self.settings.get("preload_app", (False, 0))[0]
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"  # gunicorn's validate_bool takes these too
        return value if isinstance(value, bool) else None

    @property
    def hook_kinds(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((name, HOOKS[name]) for name in self.hooks))


def parse_gunicorn_config(text: str, path: str) -> GunicornConfig | None:
    """Module-level literal assignments and hook functions; None when it is not Python. A
    setting assigned under ``if``/``try``/``with`` is an expression: it may not happen."""
    config = GunicornConfig(path)

    def visit(body: list[ast.stmt], nested: bool) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name in HOOKS:
                config.hooks.setdefault(stmt.name, stmt.lineno)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for name in (t.id for t in targets if isinstance(t, ast.Name)):
                    if name in HOOKS:
                        config.hooks.setdefault(name, stmt.lineno)
                    elif name in ("worker_class", "wsgi_app", "preload_app"):
                        value = EXPRESSION if nested else parse_literal(stmt.value)
                        config.settings[name] = (value, stmt.lineno)
            elif isinstance(stmt, (ast.If, ast.Try, ast.With)):
                visit(
                    stmt.body + getattr(stmt, "orelse", []) + getattr(stmt, "finalbody", []), True
                )
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body, True)

    try:
        visit(ast.parse(text).body, False)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return config


class Tree:
    """The checked root: where files are, their text (read safely), the gunicorn configs."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = os.path.abspath(root)
        self.real_root = os.path.realpath(self.root)
        self.limit = limit
        self.problems: set[str] = set()
        self.configs: dict[str, GunicornConfig | None] = {}
        self.referenced: set[str] = set()  # configs named by -c: each counts as one

    def real(self, rel: str) -> str | None:
        """The real path of ``rel`` when it stays inside the root, else None."""
        if "\0" in rel or rel.startswith("/") or rel == ".." or rel.startswith("../"):
            return None
        return resolve_within(os.path.join(self.root, *rel.split("/")), self.real_root)

    def is_file(self, rel: str, test: Callable[[str], bool] = os.path.isfile) -> bool:
        real = self.real(rel)
        return real is not None and test(real)

    def read(self, rel: str) -> str | None:
        """The text of a regular file inside the root, at most ``limit`` bytes; else None."""
        real = self.real(rel)
        try:
            return None if real is None else read_regular(real, self.limit).decode(errors="replace")
        except FileTooLargeError:
            self.problems.add(f"skipped {rel}: over the {self.limit}-byte size limit")
        except OSError:  # not a regular file, or gone: nothing to read
            pass
        return None

    def place(self, base: str, value: str, *, guess: bool = True) -> str | None:
        """The root-relative file a command names, relative to the declaring file's folder
        or the root; an absolute path by its longest suffix found in the tree (containers copy
        the tree to /app). A missing relative file is guessed under ``base``."""
        if not value or any(c in value for c in "\0$%~`*?"):
            return None
        if value.startswith("/"):
            parts = [p for p in value.split("/") if p and p != "."]
            suffixes = ("/".join(parts[i:]) for i in range(len(parts)))
            return next((s for s in suffixes if ".." not in s and self.is_file(s)), None)
        joined = (posixpath.normpath(posixpath.join(b, value)) for b in dict.fromkeys((base, "")))
        candidates = [c for c in joined if c != ".." and not c.startswith("../")]
        found = next((c for c in candidates if self.is_file(c)), None)
        return found or (candidates[0] if guess and candidates else None)

    def gunicorn_config(self, rel: str) -> GunicornConfig | None:
        if rel not in self.configs:
            text = self.read(rel)
            self.configs[rel] = None if text is None else parse_gunicorn_config(text, rel)
            if text is not None and self.configs[rel] is None:
                self.problems.add(f"{rel}: not valid Python, gunicorn settings not read")
        return self.configs[rel]


@dataclass(frozen=True)
class Site:
    """Where a command was found: the tree, ``path:line`` and the folder of that file."""

    tree: Tree
    source: str
    base: str

    def shell(self, text: str, depth: int = 0) -> list[Launcher]:
        """The launchers in one shell command line (``a && b; exec c | d`` ...)."""
        if _COMMAND_WORD.search(text) is None:
            return []  # no command this module knows: most lines of a shell script or Makefile
        try:
            lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:  # unbalanced quotes: a line of a multi-line shell construct, or not
            return []  # a command at all (autotools scripts have thousands): nothing to say
        found: list[Launcher] = []
        segment: list[str] = []
        skip = False
        for token in [*tokens, ";", ";"]:  # the second ends a line whose last word is ">"
            if skip:
                skip = False
            elif token and set(token) <= _OPERATORS | {"<", ">"} and ("<" in token or ">" in token):
                skip = True  # a redirection and its target; `2>&1` leaves a "2" behind
                if segment and segment[-1].isdigit():
                    segment.pop()
            elif token and set(token) <= _OPERATORS:
                found += self.argv(segment, depth)
                segment = []
            else:
                segment.append(token)
        return found

    def argv(self, argv: list[str], depth: int = 0) -> list[Launcher]:
        """The launcher an exec-form command starts, through env, exec, sh -c, uv run ..."""
        env: dict[str, str] = {}
        i = 0
        while i < len(argv):
            word, following = posixpath.basename(argv[i]), argv[i + 1] if i + 1 < len(argv) else ""
            if _ASSIGNMENT.match(argv[i]):
                key, _, value = argv[i].partition("=")
                env[key] = value
            elif word in _PREFIXES:
                while i + 1 < len(argv) and argv[i + 1].startswith("-"):
                    i += 1 + (word == "env" and argv[i + 1] in ("-u", "--unset"))
            elif word in ("gosu", "su-exec") or following == "run-program":  # newrelic-admin
                i += 1
            elif (word in _RUNNERS and following == "run") or word == "opentelemetry-instrument":
                i += word != "opentelemetry-instrument"
                while i + 1 < len(argv) and argv[i + 1].startswith("-"):
                    valued = argv[i + 1] in _RUNNER_VALUED or word == "opentelemetry-instrument"
                    i += 1 + (valued and "=" not in argv[i + 1])
            elif word in _SHELLS:  # sh -c "..." (also -ec, -lc): that string is the command
                rest = argv[i + 1 :]
                flag = next((n for n, a in enumerate(rest) if not a.startswith("-")), len(rest))
                wants_c = any("c" in a[1:] for a in rest[:flag] if not a.startswith("--"))
                return (
                    self.shell(rest[flag], depth + 1)
                    if wants_c and flag < len(rest) and depth < 3
                    else []
                )
            else:
                break
            i += 1
        return self._program(argv[i:], env)

    def _program(self, argv: list[str], env: dict[str, str]) -> list[Launcher]:
        name, shown = posixpath.basename(argv[0]) if argv else "", shlex.join(argv)
        if _PYTHON.match(name):
            return self._python(argv[1:], shown, env)
        if name.endswith(".py") and not name.startswith("-"):  # a script run by its shebang
            path = self.tree.place(self.base, argv[0])
            return [self._make("python", shown, path=path)] if path else []
        return self._tool(name, argv[1:], shown, env)

    def _tool(self, name: str, args: list[str], shown: str, env: dict[str, str]) -> list[Launcher]:
        if name == "gunicorn":
            return [self._gunicorn(args, shown, env)]
        if name == "celery":
            return self._celery(args, shown)
        if name == "uwsgi":
            options = _options(args)[0].items()
            return self.uwsgi({k.lstrip("-").replace("_", "-"): v for k, v in options}, shown)
        return self._locust(args, shown) if name == "locust" else []

    def _make(self, kind: str, command: str, **fields: Any) -> Launcher:
        fields = {"module": None, "path": None, "function": None, "framework": None, **fields}
        return Launcher(kind=kind, command=command, source=self.source, **fields)

    def _python(self, args: list[str], shown: str, env: dict[str, str]) -> list[Launcher]:
        """``python [options] -m MODULE ...`` or ``python [options] SCRIPT ...``."""
        n, module, script = 0, None, None
        while n < len(args) and module is None and script is None:
            arg = args[n]
            cut = min((arg.find(c, 1) for c in "cmWX" if c in arg[1:]), default=-1)
            if arg == "-":  # the program comes from stdin
                return []
            short = arg[:1] == "-" and arg[:2] != "--" and cut > 0
            if arg == "--check-hash-based-pycs":
                n += 2
                continue
            if short and cut == len(arg) - 1:
                value, n = (args[n + 1] if n + 1 < len(args) else ""), n + 2  # -m MOD, -W arg
            elif short:
                value, n = arg[cut + 1 :], n + 1  # -mMOD, -um MOD is -u -m MOD
            elif arg.startswith("-"):
                n += 1
                continue
            else:
                script, n = arg, n + 1
                break
            if cut > 0 and arg[cut] == "c":  # python -c CODE: no file to place
                return []
            module = value if cut > 0 and arg[cut] == "m" else None
        if module == "gevent.monkey":
            return self._gevent_monkey(args[n:], shown)
        if module in ("gunicorn", "celery", "locust"):
            return self._tool(module, args[n:], shown, env)
        if module is not None:
            valid = _DOTTED.match(module) and module not in _TOOLS
            return [self._make("python", shown, module=module)] if valid else []
        path = self.tree.place(self.base, script or "", guess=str(script).endswith(".py"))
        return [self._make("python", shown, path=path)] if path else []

    def _gevent_monkey(self, args: list[str], shown: str) -> list[Launcher]:
        """``python -m gevent.monkey [--module] TARGET``: gevent patches, then runs TARGET."""
        first = next((n for n, a in enumerate(args) if not a.startswith("-")), None)
        if first is None:
            return []
        target = args[first]
        dotted = _DOTTED.match(target) and not target.endswith(".py")
        if "--module" in args[:first] or (
            dotted and not self.tree.place(self.base, target, guess=False)
        ):
            where = {"module": target if _DOTTED.match(target) else None}
        else:
            where = {"path": self.tree.place(self.base, target)}
        return [self._make("gevent-monkey", shown, framework="gevent", **where)]

    def _gunicorn(self, args: list[str], shown: str, env: dict[str, str]) -> Launcher:
        """gunicorn's options: GUNICORN_CMD_ARGS, then the command line, over the config."""
        try:
            args = shlex.split(env.get("GUNICORN_CMD_ARGS", "")) + args
        except ValueError:
            pass
        options, positional = _options(args, _GUNICORN_FLAGS)
        worker = options.get("--worker-class", options.get("-k"))
        cfg = self._config(options.get("--config", options.get("-c")))
        app = positional[0] if positional else cfg.settings.get("wsgi_app", ("",))[0] if cfg else ""
        module, function = split_target(app) if isinstance(app, str) else (None, None)
        found = {"module": module, "function": function, "hooks": cfg.hook_kinds if cfg else ()}
        found["framework"] = worker_framework(worker) if worker else cfg and cfg.framework
        found["preload"] = True if "--preload" in options else cfg.preload if cfg else False
        if "--preload" not in options and cfg is not None:
            found["preload_at"] = cfg.preload_at
        return self._make("gunicorn", shown, **found)

    def _config(self, value: str | None) -> GunicornConfig | None:
        """The config gunicorn would load: ``-c FILE``/``python:mod``, else ./gunicorn.conf.py."""
        tree = self.tree
        if value is None:
            names = (posixpath.join(self.base, "gunicorn.conf.py"), "gunicorn.conf.py")
            rel = next((name for name in names if tree.is_file(name)), None)
            return tree.gunicorn_config(rel) if rel else None
        if value.startswith("python:"):
            stem = value[7:].replace(".", "/") + ".py"
            rel = tree.place(self.base, stem, guess=False) or tree.place("src", stem, guess=False)
        else:
            rel = tree.place(self.base, value.removeprefix("file:"), guess=False)
        if rel is None:
            return None
        tree.referenced.add(rel)
        return tree.gunicorn_config(rel)

    def _celery(self, args: list[str], shown: str) -> list[Launcher]:
        """A worker (or multi) with ``-P gevent``/``eventlet``: celery patches before the app."""
        options, positional = _options(args, _CELERY_FLAGS)
        if not positional or positional[0] not in ("worker", "multi", "beat"):
            return []
        module, function = split_target(options.get("--app", options.get("-A", "")))
        pool = options.get("--pool", options.get("-P"))
        framework = pool if pool in ("gevent", "eventlet") and positional[0] != "beat" else None
        return [self._make("celery", shown, module=module, function=function, framework=framework)]

    def uwsgi(self, options: dict[str, str], shown: str) -> list[Launcher]:
        """A uWSGI app from its options (command line or ``[uwsgi]`` section)."""
        gevent = options.get("gevent", "").strip()
        framework = "gevent" if gevent and gevent != "0" else None
        target = options.get("module") or options.get("wsgi") or options.get("w")
        module, function = split_target(target or "")
        script = options.get("wsgi-file") or options.get("file")
        path = self.tree.place(self.base, script) if script else None
        if module is None and path is None and framework is None:
            return []
        function = function or options.get("callable") or None
        found = {"module": module, "path": path, "function": function, "framework": framework}
        return [self._make("uwsgi", shown, **found)]

    def _locust(self, args: list[str], shown: str) -> list[Launcher]:
        """locust patches when it is imported: every locustfile runs under gevent."""
        options, found = _options(args)[0], []
        for name in options.get("--locustfile", options.get("-f", "locustfile")).split(","):
            name = name.strip()
            if self.tree.is_file(posixpath.join(self.base, name), os.path.isdir):  # a package
                module = posixpath.basename(name.rstrip("/"))
                where = {"module": module if _DOTTED.match(module) else None}
            else:  # locust adds .py when the name has none
                path = self.tree.place(self.base, name, guess=False)
                where = {
                    "path": path or self.tree.place(self.base, name.removesuffix(".py") + ".py")
                }
            found.append(self._make("locust", shown, framework="gevent", **where))
        return found


def _options(
    args: list[str], flags: frozenset[str] = frozenset()
) -> tuple[dict[str, str], list[str]]:
    """The options (last value wins) and positionals of a command line: ``--opt=v``,
    ``--opt v``, ``-ov``, ``-o v``. A flag, or an option before another option, has ""."""
    options: dict[str, str] = {}
    positional: list[str] = []
    n = 0
    while n < len(args):
        arg, n = args[n], n + 1
        if arg == "--":
            positional += args[n:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=") if arg[1] == "-" else (arg[:2], "", arg[2:])
        following = args[n] if n < len(args) else "-x"
        if not (eq or value) and name not in flags and (following[:1] != "-" or following == "-"):
            value, n = following, n + 1  # "-" is a value: `--access-logfile -` is stdout
        options[name] = value
    return options, positional
