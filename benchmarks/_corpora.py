"""The corpora of ``static_check.py``: built under a temporary folder, never in the repository.

Every corpus is a copy, because the warm runs edit one of its files (appending a comment) and
neither the interpreter's own library nor the shared virtualenv may be touched:

* ``a``: the gevent sdist (pinned in ``real_projects_labels.toml``, downloaded and unpacked by
  ``real_projects.py`` into its cache), copied whole, with that file's ``extend-exclude``;
* ``b``: the ``.py`` files of the running virtualenv's site-packages, checked with
  ``--framework gevent``;
* ``c``: the ``.py`` files of the standard library without ``site-packages``, ``--framework
  gevent`` (and the default mode, which only pre-scans it);
* ``d``: a generated monorepo at 1x, 4x and 16x (``--monorepo-base`` packages at 1x) and
  ``d-base``, one package: copies ``shop_000``, ``shop_001``, ... of the bundled gevent app
  ``fixtures/examples/shop``, whose absolute imports of ``shop.X`` are rewritten to point at
  other copies, so that the packages import each other's modules;
* ``one-file``: a project of one small gevent script.

A copy lives outside any ``pyproject.toml``: checked in place, site-packages would pick up this
repository's configuration (its ``exclude = ["tests", ...]``) from the folder above the venv.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import sys
import sysconfig
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import real_projects

REPO = real_projects.REPO
SHOP = REPO / "fixtures" / "examples" / "shop"
GEVENT = ("gevent", "26.9.0")
ALL = ("a", "b", "c", "d", "one-file")
# Snippets run in a corpus (or this repository): -P keeps its folder off sys.path, so that neither
# the checked files nor the working tree's patchaudit shadow what PYTHONPATH and the venv give.
PY = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]


class SetupError(Exception):
    """A corpus cannot be built or the tools do not see the same files (exit status 2)."""


@dataclass
class Corpus:
    key: str  # "a", "b", "c", "d1x", "d4x", "d16x", "one-file"
    label: str
    root: Path
    pa_args: list[str] = field(default_factory=list)  # options for every patchaudit run
    ruff_exclude: list[str] = field(default_factory=list)  # on top of patchaudit's SKIP_DIRS
    edit: str = ""  # file the warm runs append a comment to ("" = no edit)
    info: dict = field(default_factory=dict)  # files, lines, bytes, source


# Corpora copied from the running interpreter: label, sysconfig path, folders skipped, file edited
_COPIED = {
    "b": ("site-packages", "purelib", set(), "gunicorn/workers/ggevent.py"),
    "c": ("stdlib", "stdlib", {"site-packages"}, "socket.py"),
}


def build(keys: list[str], workspace: Path, monorepo_base: int) -> list[Corpus]:
    """The chosen corpora, in run order."""
    workspace = workspace.resolve()
    if workspace == REPO or REPO in workspace.parents:
        raise SetupError(f"the workspace {workspace} must be outside the repository")
    corpora = []
    for key in keys:
        if key == "a":
            corpora.append(gevent_sdist(workspace))
        elif key in _COPIED:
            label, paths_key, skip, edit = _COPIED[key]
            source = Path(sysconfig.get_paths()[paths_key]).resolve()
            dest = workspace / key / source.name
            files = copy_py(source, dest, skip=skip)
            info = {"source": str(source), "copied_files": files}
            corpora.append(
                Corpus(key, label, dest, ["--framework", "gevent"], edit=edit, info=info)
            )
        elif key == "d":
            # d-base (one copy) is the fixed cost that the per-file times of d1x..d16x leave out
            for scale in (0, 1, 4, 16):
                copies, name = monorepo_base * scale or 1, f"d{scale}x" if scale else "d-base"
                root = monorepo(workspace / name, copies)
                corpora.append(
                    Corpus(
                        name,
                        f"monorepo {scale}x" if scale else "monorepo, 1 package",
                        root,
                        edit="shop_000/settings.py" if scale == 16 else "",
                        info={"source": str(SHOP), "packages": copies, "scale": scale},
                    )
                )
        elif key == "one-file":
            root = workspace / "one-file"
            root.mkdir(parents=True)
            (root / "app.py").write_text(ONE_FILE)
            corpora.append(Corpus("one-file", "one-file project", root))
        else:
            raise SetupError(f"unknown corpus {key!r}; choose from {', '.join(ALL)}")
    for corpus in corpora:
        if corpus.edit and not (corpus.root / corpus.edit).is_file():
            raise SetupError(f"{corpus.key}: no {corpus.edit} to edit for the warm runs")
    return corpora


ONE_FILE = '''"""A tiny gevent echo server."""
from gevent import monkey

monkey.patch_all()

from gevent.server import StreamServer  # noqa: E402


def echo(sock, address):
    sock.sendall(sock.recv(1024))


if __name__ == "__main__":
    StreamServer(("127.0.0.1", 16000), echo).serve_forever()
'''


def gevent_sdist(workspace: Path) -> Corpus:
    labels = real_projects.load_labels(real_projects.LABELS)
    project = next((p for p in labels.projects if (p.name, p.version) == GEVENT), None)
    if project is None:
        raise SetupError(f"{real_projects.LABELS.name} has no project gevent {GEVENT[1]}")
    cache = real_projects.cache_root()
    source = real_projects.unpack(project, real_projects.download(project, cache), cache)
    dest = workspace / "a" / source.name
    shutil.copytree(source, dest, symlinks=True)  # unpack() refused links already
    exclude = list(project.extend_exclude)
    pa_args = [arg for pattern in exclude for arg in ("--extend-exclude", pattern)]
    return Corpus(
        "a",
        f"gevent {GEVENT[1]} sdist",
        dest,
        pa_args,
        exclude,
        edit="examples/wsgiserver.py",
        info={"source": str(source)},
    )


def copy_py(source: Path, dest: Path, skip: set[str]) -> int:
    """Copy the ``.py`` files below ``source`` (keeping mtimes), except folders in ``skip``."""
    count = 0
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in skip and d != "__pycache__")
        target = dest / os.path.relpath(folder, source)
        for name in names:
            if name.endswith(".py") and os.path.isfile(os.path.join(folder, name)):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.join(folder, name), target / name)
                count += 1
    return count


_ABSOLUTE = re.compile(r"^(\s*(?:from|import)\s+)shop(?=[.\s])(\.(\w+))?", re.MULTILINE)
MONOREPO_PYPROJECT = """[project]
name = "shop-monorepo"
version = "1.0"
dependencies = ["gevent", "psycopg2", "gunicorn"]

[tool.patchaudit]
entry-points = ["shop_*/wsgi.py", "shop_*/worker.py"]
"""


def monorepo(root: Path, copies: int) -> Path:
    """``copies`` renamed copies of the shop package; copy k's ``shop.X`` becomes copy j's."""
    sources = sorted((SHOP / "shop").glob("*.py"))
    if not sources:
        raise SetupError(f"no app files in {SHOP / 'shop'}")
    for k in range(copies):
        package = root / f"shop_{k:03d}"
        package.mkdir(parents=True)

        def rewrite(match: re.Match, k: int = k) -> str:
            module = match.group(3) or ""
            j = (k + 1 + zlib.crc32(module.encode()) % 7) % copies
            return f"{match.group(1)}shop_{j:03d}{match.group(2) or ''}"

        for path in sources:
            (package / path.name).write_text(_ABSOLUTE.sub(rewrite, path.read_text()))
    (root / "pyproject.toml").write_text(MONOREPO_PYPROJECT)
    return root


# -- the file sets -----------------------------------------------------------------------------

_PATCHAUDIT_FILES = """
import json, sys
from pathlib import Path
from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static._discover import SKIP_DIRS, discover
config = load_config([Path(".")], REGISTRY.keys(), json.loads(sys.argv[1]))
files, problems = discover([Path(".")], exclude=config.exclude, root=config.root, cwd=Path.cwd(),
                           respect_gitignore=config.respect_gitignore)
print(json.dumps({"root": str(config.root), "config": str(config.source) if config.source else None,
                  "files": [str(f.path) for f in files], "problems": problems,
                  "skip_dirs": sorted(SKIP_DIRS)}))
"""
FLAKE8_FILES = """
import json, os, sys
from flake8.main.application import Application
app = Application()
app.initialize(sys.argv[1:])
app.file_checker_manager.start()
print(json.dumps([os.path.abspath(f) for f in app.file_checker_manager.filenames]))
"""
MAX_FILE_SIZE = 4 * 1024 * 1024  # patchaudit's default --max-file-size


def cli_options(pa_args: list[str]) -> dict:
    """The load_config() options of the CLI arguments this module uses."""
    options: dict = {}
    for flag, value in zip(pa_args[::2], pa_args[1::2], strict=True):
        key = flag.removeprefix("--")
        options[key] = value if key == "framework" else [*options.get(key, []), value]
    return options


def file_set(corpus: Corpus, ruff: list[str], env: dict, run, flake8: list[str] | None) -> dict:
    """Check that patchaudit and ruff (and flake8) see the same ``.py`` files; return the exclude
    options that make them: {"ruff": [...], "flake8": [...]}. ``run(cmd, cwd, env)`` runs a tool
    and returns its CompletedProcess."""
    options = json.dumps(cli_options(corpus.pa_args))
    pa = json.loads(run([*PY, "-c", _PATCHAUDIT_FILES, options], corpus.root, env).stdout)
    expected = corpus.root / "pyproject.toml" if corpus.key.startswith("d") else None
    found = Path(pa["config"]) if pa["config"] else None
    if found != expected or Path(pa["root"]).resolve() != corpus.root.resolve():
        raise SetupError(f"{corpus.key}: patchaudit's root is {pa['root']}, config {found}")
    exclude = ["--exclude", ",".join([*pa["skip_dirs"], "*.pyi", "*.ipynb"])]
    exclude += [arg for pattern in corpus.ruff_exclude for arg in ("--extend-exclude", pattern)]
    shown = run([*ruff, *exclude, "--show-files", "."], corpus.root, env).stdout.splitlines()
    sets = {
        "patchaudit": {str(Path(p).resolve()) for p in pa["files"]},
        "ruff": {str(Path(p).resolve()) for p in shown if p.strip().endswith(".py")},
    }
    flake8_exclude = ["--extend-exclude", ",".join([*pa["skip_dirs"], *corpus.ruff_exclude])]
    if flake8:
        cmd = [*PY, "-c", FLAKE8_FILES, *flake8[1:], *flake8_exclude, "."]
        out = run(cmd, corpus.root, env).stdout
        sets["flake8"] = {str(Path(p).resolve()) for p in json.loads(out)}
    reference = sets["patchaudit"]
    for name, seen in sets.items():
        if seen != reference:
            extra, missing = sorted(seen - reference), sorted(reference - seen)
            raise SetupError(
                f"{corpus.key}: {name} sees other files than patchaudit: {len(extra)} extra "
                f"{extra[:3]}, {len(missing)} missing {missing[:3]}"
            )
    files = [Path(p) for p in sorted(reference)]
    sizes = [p.stat().st_size for p in files]
    corpus.info.update(
        files=len(files),
        lines=sum(_count_lines(p.read_bytes()) for p in files),
        bytes=sum(sizes),
        over_max_file_size=sum(s > MAX_FILE_SIZE for s in sizes),
        problems=pa["problems"],
        same_files=sorted(sets),
    )
    return {"ruff": exclude, "flake8": flake8_exclude}


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


# -- what patchaudit reported ------------------------------------------------------------------

MEMORY = r"""
import json, os, resource, subprocess, sys, time
def tree(pid):
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found
def rss(pids):
    pages = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                pages += int(f.read().split()[1])
        except OSError:
            pass
    return pages * os.sysconf("SC_PAGE_SIZE")
proc, peak = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL), 0
while proc.poll() is None:
    peak = max(peak, rss(tree(proc.pid)))
    time.sleep(0.02)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": proc.returncode, "max_rss": usage.ru_maxrss * 1024, "tree_peak": peak}))
"""


def _signature(report: dict) -> tuple[str, list]:
    findings = sorted(
        (f["rule"], f["path"], f["line"], f["column"], f["severity"], f["message"])
        for f in report["findings"]
    )
    blob = json.dumps([findings, report.get("programs", [])], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12], findings


def compare(groups: dict[tuple[str, str], list], details: dict) -> dict[str, bool]:
    """Every run of a corpus in one mode (cold, -j 1, warm) must give the same JSON report;
    ``details`` gets, per corpus and mode, the counts and which runs gave which result."""
    out = {}
    for (corpus, mode), items in groups.items():
        seen: dict[str, tuple[list, list[str]]] = {}
        internal = set()
        for name, report in items:
            digest, findings = _signature(report)
            seen.setdefault(digest, (findings, []))[1].append(name)
            internal |= {e for e in report["errors"] if "internal error" in e}
        first = items[0][1]
        ok = len(seen) == 1 and not internal
        out[f"{corpus} {mode}: identical findings in all runs, no internal errors"] = ok
        details[f"{corpus} {mode}"] = {
            "runs": len(items),
            "findings": len(first["findings"]),
            "summary": first["summary"],
            "programs": len(first.get("programs", [])),
            "errors": first["errors"],
            "internal_errors": sorted(internal),
            "runs_by_result": {digest: names for digest, (_, names) in seen.items()},
        }
        print(
            f"  {corpus} {mode}: {len(items)} runs, {len(first['findings'])} findings "
            f"{first['summary']}, {len(first.get('programs', []))} programs, "
            f"{len(first['errors'])} errors ({len(internal)} internal); "
            f"{len(seen)} distinct result(s) {'PASS' if ok else 'FAIL'}"
        )
        for error in sorted(internal)[:5]:
            print(f"    {error}")
        if len(seen) > 1:
            (base, names), *others = seen.values()
            for findings, other_names in others:
                only_a = sorted(set(base) - set(findings))
                only_b = sorted(set(findings) - set(base))
                print(
                    f"    {sorted(set(names))} vs {sorted(set(other_names))}: "
                    f"{len(only_a)} vs {len(only_b)} findings of their own, e.g. "
                    f"{only_a[:2]} / {only_b[:2]} (programs may differ too)"
                )
    return out


_ANALYSIS = """
import json, sys
from pathlib import Path
from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import check
config = load_config([Path(".")], REGISTRY.keys(), json.loads(sys.argv[1]))
report = check([Path(".")], config, cwd=Path.cwd(), use_cache=True)
print(json.dumps({"files_seen": report.files_seen, "files_analyzed": report.files_analyzed,
                  "findings": len(report.findings), "notes": report.notes}))
"""


def analysis(items: list[tuple[Corpus, str, dict]], run) -> dict:
    """Files seen / parsed per (corpus, mode, env), in process (from the env's cache, if any)."""
    out = {}
    print("\nwhat patchaudit did:")
    for corpus, mode, env in items:
        pa_args = corpus.pa_args if mode != "pre-scan" else []
        options = json.dumps(cli_options(pa_args))
        info = json.loads(run([*PY, "-c", _ANALYSIS, options], corpus.root, env).stdout)
        out[f"{corpus.key} {mode}"] = info
        print(
            f"  {corpus.key} {mode}: {info['files_seen']} files seen, "
            f"{info['files_analyzed']} parsed and analysed, {info['findings']} findings"
        )
        for note in info["notes"]:
            print(f"      note: {note}")
    return out


# -- robustness --------------------------------------------------------------------------------


def robustness(stdlib: Path, timed_files: int) -> dict:
    """summarize() every .py file outside site-packages (no pre-scan); compare with compile()."""
    from patchaudit.static._summary import summarize

    files = []
    for folder, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "__pycache__")]
        files += [Path(folder, name) for name in names if name.endswith(".py")]
    files.sort()
    start = time.perf_counter()
    parse_errors: dict[str, tuple] = {}
    internal: dict[str, str] = {}
    compile_fails: dict[str, str] = {}
    ast_ok: set[str] = set()
    for path in files:
        rel = path.relative_to(stdlib).as_posix()
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            summary = summarize(rel, None, False, data)
            try:
                compile(data, str(path), "exec", dont_inherit=True)
            except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
                compile_fails[rel] = f"{type(exc).__name__}: {exc}"
                try:
                    ast.parse(data, str(path))
                    ast_ok.add(rel)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    pass
        if summary.parse_error is not None:
            parse_errors[rel] = summary.parse_error
        if summary.internal_error is not None:
            internal[rel] = summary.internal_error
    elapsed = time.perf_counter() - start

    wrongly_rejected = sorted(set(parse_errors) - set(compile_fails))
    # compile() also rejects what only the compiler checks (e.g. an unknown __future__ feature);
    # such files are syntactically valid, so patchaudit parsing them is right.
    compile_only = sorted(set(compile_fails) - set(parse_errors))
    unexplained = [rel for rel in compile_only if rel not in ast_ok]
    ok = not internal and not wrongly_rejected and not unexplained
    print(
        f"\nrobustness: summarize() on {len(files)} files of {stdlib} ({len(files) - timed_files}"
        f" more than the timed set: venv/ is walked here) in {elapsed:.1f} s"
    )
    print(
        f"  parse errors: {len(parse_errors)} (all rejected by compile() too: "
        f"{'yes' if not wrongly_rejected else 'NO'})"
    )
    for rel, (line, col, msg) in sorted(parse_errors.items()):
        print(f"    {rel}:{line}:{col}: {msg}")
    if compile_only:
        print(f"  parsed, but rejected by compile() after parsing: {len(compile_only)}")
        for rel in compile_only:
            marker = "" if rel in ast_ok else "  <- ast.parse rejects it too: UNEXPLAINED"
            print(f"    {rel}: {compile_fails[rel]}{marker}")
    for rel in wrongly_rejected:
        print(f"  FAIL: {rel} compiles but patchaudit reports {parse_errors[rel]}")
    print(f"  internal errors: {len(internal)} {'PASS' if not internal else 'FAIL'}")
    for rel, message in sorted(internal.items()):
        print(f"    {rel}: {message}")
    return {
        "files": len(files),
        "seconds": round(elapsed, 2),
        "parse_errors": {rel: list(v) for rel, v in sorted(parse_errors.items())},
        "compile_only_errors": {rel: compile_fails[rel] for rel in compile_only},
        "wrongly_rejected": wrongly_rejected,
        "internal_errors": internal,
        "ok": ok,
    }
