"""Find the Python files to check and give each its importable module name.

Walking uses ``os.scandir`` on plain strings (``Path`` objects are only built for the results)
because discovery runs on every invocation, including pre-commit runs on big trees.
``.gitignore`` files (root and nested) and the configured ``exclude`` patterns use git's
wildmatch syntax; both prune whole folders, so a file below an ignored folder is never
re-included, exactly as in git.

The checked tree may be hostile, so discovery never leaves the project root: a symlink (to a
file or a folder) whose target is outside it is not followed, and neither is a path named on the
command line that resolves outside it; each becomes a problem line. Links within the tree work
as usual. Only regular files are taken: a FIFO named ``x.py`` would block the reader.
"""

from __future__ import annotations

import keyword
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._safeio import read_regular, resolve_within
from .._safeio import reason as _reason

__all__ = ["SKIP_DIRS", "DiscoveryError", "SourceFile", "discover", "walk_named"]

# Never project source. site-packages is deliberately not here: use `exclude` for it.
SKIP_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "node_modules",
        ".patchaudit_cache",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "build",
        "dist",
    }
)
WALK_LIMITS = (12, 50_000)  # walk_named: folders deep, entries seen
_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_]\w*>")
_Key = tuple[int, int]  # (st_dev, st_ino) of a real directory
_Specs = tuple[tuple[int, "_Matcher"], ...]  # (length of base prefix, patterns of one .gitignore)


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    relpath: str  # relative to cwd, forward slashes (what reports show)
    module: str | None  # dotted module name; None when not importable (e.g. "my-script.py")
    is_package: bool  # it's an __init__.py
    # For a symlink within the tree, the real file it names. Files are read from here (or
    # ``path``) without following a final symlink, so what was checked here is what is read.
    target: Path | None = None

    @property
    def readable(self) -> Path:
        return self.target or self.path


class DiscoveryError(Exception):
    """A path given by the user cannot be used (one-line message)."""


class _Matcher:
    """gitignore patterns compiled into one regex, tried last pattern first.

    pathspec checks patterns one by one (microseconds each); one alternation whose branches are
    in reverse order gives git's "last matching pattern wins" in a single ``fullmatch``.
    Paths are tested one entry at a time like git does (folders with a trailing slash), so
    ``fullmatch`` rather than pathspec's prefix match: pruning takes care of descendants.
    """

    __slots__ = ("_includes", "_regex")

    def __init__(self, lines: Iterable[str]) -> None:
        import pathspec  # on use: 10 ms of start-up a tree without ignore patterns does not pay

        patterns = [
            p
            for p in pathspec.GitIgnoreSpec.from_lines(lines).patterns
            if p.include is not None and getattr(p, "regex", None) is not None
        ]
        patterns.reverse()
        branches = [
            f"(?P<p{i}>{_NAMED_GROUP.sub('(?:', p.regex.pattern)})" for i, p in enumerate(patterns)
        ]
        self._includes = [bool(p.include) for p in patterns]
        self._regex = re.compile("|".join(branches)) if branches else None

    @property
    def empty(self) -> bool:
        return self._regex is None

    def check(self, path: str) -> bool | None:
        """True: ignored, False: re-included by ``!pattern``, None: no pattern matches."""
        if self._regex is None:
            return None
        match = self._regex.fullmatch(path)
        if match is None:
            return None
        return self._includes[int(match.lastgroup[1:])]  # type: ignore[index]


def discover(
    paths: Sequence[Path],
    *,
    exclude: Sequence[str],
    root: Path,
    cwd: Path,
    respect_gitignore: bool = True,
) -> tuple[list[SourceFile], list[str]]:
    """Return the ``.py`` files under ``paths`` (sorted, deduplicated) and one-line problems.

    Folders are walked; files named explicitly are taken whatever their extension (pre-commit
    passes extensionless scripts too) and skip ``.gitignore``, but ``exclude`` still applies to
    both. Relative ``paths`` are relative to ``cwd``. A missing path raises
    :class:`DiscoveryError`; unreadable folders, symlink loops, links out of ``root`` and paths
    outside it become problem strings. Files are not opened here: an unreadable file is the
    reader's error to report.
    """
    walker = _Walker(exclude, root, cwd, respect_gitignore)
    resolved = []
    for given in paths:
        full = os.path.normpath(os.path.join(walker.cwd, os.fspath(given)))
        if not os.path.lexists(full):
            raise DiscoveryError(f"path does not exist: {given}")
        resolved.append(full)
    for full in resolved:
        walker.add_path(full)
    return walker.results()


def walk_named(
    root: Path, accept: Callable[[str, bool], bool], exclude: Sequence[str], gitignore: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """(root-relative posix path, path to read) of the files ``accept(name, False)`` takes in the
    folders ``accept(name, True)`` lets in, and problems. Discover's pruning, but links to folders
    are not entered, and ``WALK_LIMITS`` bound the walk: it runs on every check, maybe hostile."""
    deepest, most = WALK_LIMITS
    walker, found, count = _Walker(exclude, Path(os.path.abspath(root)), root, gitignore), [], 0
    stack: list[tuple[str, _Specs, int]] = [(walker.root, (), 0)]
    while stack and count <= most:
        folder, specs, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            walker.problem(folder, _reason(exc), is_dir=True)
            continue
        if depth and any(e.name == "pyvenv.cfg" for e in entries):  # a virtualenv
            continue
        matcher = _read_gitignore(os.path.join(folder, ".gitignore")) if gitignore else None
        specs = specs if matcher is None else (*specs, (len(folder) + 1, matcher))
        for entry in entries[: most + 1 - count]:
            count, full, link = count + 1, folder + os.sep + entry.name, entry.is_symlink()
            is_dir = not link and entry.is_dir()
            pruned = count > most or is_dir and (entry.name in SKIP_DIRS or depth >= deepest)
            if pruned or not accept(entry.name, is_dir) or walker.ignored(full, is_dir, specs):
                continue
            real = resolve_within(full, walker.real_root) if link else full
            if is_dir:
                stack.append((full, specs, depth + 1))
            elif real is None:
                walker.problem(full, LINK_OUT, is_dir=False)
            elif os.path.isfile(real) if link else entry.is_file(follow_symlinks=False):
                found.append((_posix(full[len(walker.root) + 1 :]), real))
            else:  # a FIFO, socket or device: opening it could block
                walker.problem(full, "not a regular file", is_dir=False)
    over = {f"stopped looking after {most} entries"} if count > most else set()
    return sorted(found), sorted(walker.problems | over)


class _Walker:
    def __init__(self, exclude: Sequence[str], root: Path, cwd: Path, gitignore: bool) -> None:
        self.cwd = os.path.abspath(cwd)
        self.root = os.path.normpath(os.path.join(self.cwd, os.fspath(root)))
        self.real_root = os.path.realpath(self.root)
        self.exclude = _Matcher(exclude) if exclude else None
        self.gitignore = gitignore
        src = os.path.join(self.root, "src")
        # Deepest first, so a file under root/src gets its name relative to root/src.
        self.source_roots = [src, self.root] if os.path.isdir(src) else [self.root]
        self.files: dict[str, tuple[str, str]] = {}  # full path -> (folder, file name)
        self.targets: dict[str, str] = {}  # full path of a symlink -> the real file in the tree
        self.problems: set[str] = set()
        self.seen: set[_Key] = set()
        self.has_init: dict[str, bool] = {}
        self.prefixes: dict[str, tuple[str, ...] | None] = {}
        self.project_roots: dict[str, bool] = {}  # folder -> has its own project marker

    # -- entry points -------------------------------------------------------------------------

    def add_path(self, full: str) -> None:
        try:
            st = os.stat(full)
        except OSError as exc:
            self.problem(full, _reason(exc), is_dir=False)
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        real = resolve_within(full, self.real_root)
        if real is None:  # `..` out of the root, or a link out of it
            self.problem(full, f"outside the project root {self.root}", is_dir=is_dir)
            return
        if self.excluded_with_parents(full, is_dir=is_dir):
            return
        if is_dir:
            self.walk(full, (st.st_dev, st.st_ino))
        elif not stat.S_ISREG(st.st_mode):
            self.problem(full, "not a regular file or folder", is_dir=False)
        else:
            self.files[full] = os.path.split(full)
            if os.path.islink(full):
                self.targets[full] = real

    def results(self) -> tuple[list[SourceFile], list[str]]:
        out = []
        folders: dict[str, Path] = {}  # parent / name is about twice as fast as Path(full)
        for full, (folder, filename) in self.files.items():
            parent = folders.get(folder)
            if parent is None:
                parent = folders[folder] = Path(folder)
            module, is_package = self.module_name(folder, filename)
            target = self.targets.get(full)
            out.append(
                SourceFile(
                    parent / filename,
                    self.display(full),
                    module,
                    is_package,
                    Path(target) if target is not None else None,
                )
            )
        # Compare path component-wise ("a/b.py" before "a-b.py") without splitting every path.
        out.sort(key=lambda f: f.relpath.replace("/", "\0"))
        return out, sorted(self.problems)

    # -- walking ------------------------------------------------------------------------------

    def walk(self, top: str, key: _Key) -> None:
        self.seen.add(key)
        stack: list[tuple[str, _Specs, tuple[_Key, ...]]] = [
            (top, self.parent_gitignores(top), (key,))
        ]
        # Symlinked folders wait until every real folder is walked, so that a link to a folder
        # inside the tree never claims its files (the real path wins whatever the sort order).
        deferred: list[tuple[str, _Specs, tuple[_Key, ...]]] = []
        while stack or deferred:
            if not stack:
                deferred.sort(key=lambda item: item[0])  # scandir order is arbitrary
                link, specs, chain = deferred.pop(0)
                if resolve_within(link, self.real_root) is None:  # never walk out of the tree
                    self.problem(link, LINK_OUT, is_dir=True)
                    continue
                try:
                    st = os.stat(link)
                except OSError as exc:
                    self.problem(link, _reason(exc), is_dir=True)
                    continue
                key = (st.st_dev, st.st_ino)
                if key in chain:
                    self.problem(link, "symlink loop", is_dir=True)
                if key in self.seen:  # a loop, or a second name for a folder already walked
                    continue
                self.seen.add(key)
                stack.append((link, specs, (*chain, key)))
            folder, specs, chain = stack.pop()
            self.scan(folder, specs, chain, top, stack, deferred)

    def scan(
        self,
        folder: str,
        specs: _Specs,
        chain: tuple[_Key, ...],
        top: str,
        stack: list[tuple[str, _Specs, tuple[_Key, ...]]],
        deferred: list[tuple[str, _Specs, tuple[_Key, ...]]],
    ) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            self.problem(folder, _reason(exc), is_dir=True)
            return
        names = {e.name for e in entries}
        if "pyvenv.cfg" in names and folder != top:  # a virtualenv, whatever its name
            return
        self.has_init[folder] = "__init__.py" in names
        if self.gitignore and ".gitignore" in names:
            matcher = _read_gitignore(os.path.join(folder, ".gitignore"))
            if matcher is not None:
                specs = (*specs, (len(folder) + 1, matcher))
        for entry in entries:
            name = entry.name
            full = folder + os.sep + name
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                if name in SKIP_DIRS or self.ignored(full, True, specs):
                    continue
                if entry.is_symlink():
                    deferred.append((full, specs, chain))
                    continue
                try:
                    st = entry.stat()
                except OSError as exc:
                    self.problem(full, _reason(exc), is_dir=True)
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in self.seen:
                    self.seen.add(key)
                    stack.append((full, specs, (*chain, key)))
            elif name.endswith(".py"):
                if entry.is_symlink():
                    self.add_link(full, folder, name, specs)
                elif not self.ignored(full, False, specs):
                    if entry.is_file(follow_symlinks=False):
                        self.files[full] = (folder, name)
                    else:  # a FIFO, socket or device: opening it could block
                        self.problem(full, "not a regular file", is_dir=False)

    def add_link(self, full: str, folder: str, name: str, specs: _Specs) -> None:
        """A symlink named ``*.py``: taken when it names a regular file inside the root."""
        try:
            st = os.stat(full)
        except OSError:
            self.problem(full, "broken symlink", is_dir=False)
            return
        if self.ignored(full, False, specs):
            return
        real = resolve_within(full, self.real_root)
        if real is None:
            self.problem(full, LINK_OUT, is_dir=False)
        elif not stat.S_ISREG(st.st_mode):
            self.problem(full, "not a regular file", is_dir=False)
        else:
            self.files[full] = (folder, name)
            self.targets[full] = real

    def ignored(self, full: str, is_dir: bool, specs: _Specs) -> bool:
        suffix = "/" if is_dir else ""
        if self.exclude is not None:
            rel = self.root_relative(full)
            if rel and self.exclude.check(_posix(rel) + suffix):
                return True
        for base_len, matcher in reversed(specs):  # the innermost .gitignore has the last word
            verdict = matcher.check(_posix(full[base_len:]) + suffix)
            if verdict is not None:
                return verdict
        return False

    def excluded_with_parents(self, full: str, is_dir: bool) -> bool:
        """``exclude`` for an explicitly named path: it, or any folder above it up to root."""
        if self.exclude is None:
            return False
        rel = self.root_relative(full)
        if not rel:
            return False
        parts = _posix(rel).split("/")
        for i in range(1, len(parts)):
            if self.exclude.check("/".join(parts[:i]) + "/"):
                return True
        return bool(self.exclude.check(_posix(rel) + ("/" if is_dir else "")))

    def parent_gitignores(self, top: str) -> _Specs:
        """The .gitignore files from root down to (not including) ``top``."""
        if not self.gitignore:
            return ()
        rel = self.root_relative(top)
        if not rel:
            return ()
        specs: list[tuple[int, _Matcher]] = []
        folder = self.root
        for part in [""] + rel.split(os.sep)[:-1]:
            folder = os.path.join(folder, part) if part else folder
            matcher = _read_gitignore(os.path.join(folder, ".gitignore"))
            if matcher is not None:
                specs.append((len(folder) + 1, matcher))
        return tuple(specs)

    # -- naming -------------------------------------------------------------------------------

    def module_name(self, folder: str, filename: str) -> tuple[str | None, bool]:
        stem = filename[:-3]
        is_package = filename == "__init__.py"
        if not filename.endswith(".py") or not _is_identifier(stem):
            return None, is_package
        prefix = self.folder_prefix(folder)
        if prefix is None or (is_package and not prefix):
            return None, is_package
        return ".".join(prefix if is_package else (*prefix, stem)), is_package

    def folder_prefix(self, folder: str) -> tuple[str, ...] | None:
        """Dotted parts that modules in ``folder`` start with; None when they can't be imported.

        Memoized per folder: naming is per file and must stay cheap on big trees.
        """
        if folder in self.prefixes:
            return self.prefixes[folder]
        parent, name = os.path.split(folder)
        prefix: tuple[str, ...] | None
        if name and self.folder_has_init(folder):  # a regular package: climb
            above = self.folder_prefix(parent)
            prefix = None if above is None or not _is_identifier(name) else (*above, name)
        else:
            # The import root. PEP 420: folders without __init__.py between a source root and
            # here are namespace packages. A non-identifier folder can't be one, so then this
            # folder itself is what's on sys.path (`python my-tools/run.py` imports siblings).
            prefix = ()
            for source_root in self.source_roots_for(folder):
                if folder.startswith(source_root + os.sep):
                    parts = tuple(folder[len(source_root) + 1 :].split(os.sep))
                    if all(_is_identifier(p) for p in parts):
                        prefix = parts
                    break
                if folder == source_root:
                    break
        self.prefixes[folder] = prefix
        return prefix

    def source_roots_for(self, folder: str) -> list[str]:
        """The nearest enclosing project (a folder with its own pyproject.toml, setup.py or
        setup.cfg, as in a monorepo) names its modules from its own root, not the config root."""
        current = folder
        while current.startswith(self.root + os.sep):
            if current not in self.project_roots:
                self.project_roots[current] = any(
                    os.path.isfile(os.path.join(current, marker)) for marker in _PROJECT_MARKERS
                )
            if self.project_roots[current]:
                src = os.path.join(current, "src")
                return [src, current] if os.path.isdir(src) else [current]
            current = os.path.dirname(current)
        return self.source_roots

    def folder_has_init(self, folder: str) -> bool:
        known = self.has_init.get(folder)
        if known is None:
            known = self.has_init[folder] = os.path.isfile(os.path.join(folder, "__init__.py"))
        return known

    # -- helpers ------------------------------------------------------------------------------

    def root_relative(self, full: str) -> str | None:
        if full.startswith(self.root + os.sep):
            return full[len(self.root) + 1 :]
        return "" if full == self.root else None

    def display(self, full: str) -> str:
        if full.startswith(self.cwd + os.sep):
            rel = full[len(self.cwd) + 1 :]
        elif full == self.cwd:
            rel = "."
        else:
            try:
                rel = os.path.relpath(full, self.cwd)
            except ValueError:  # another drive on Windows
                rel = full
        return _posix(rel)

    def problem(self, full: str, reason: str, *, is_dir: bool) -> None:
        self.problems.add(f"skipped {self.display(full)}{'/' if is_dir else ''}: {reason}")


_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
LINK_OUT = "symlink to outside the project root, not followed"


def _read_gitignore(path: str) -> _Matcher | None:
    try:
        # Like git (2.32+), a symlinked .gitignore is not followed; nor is anything but a file.
        lines = read_regular(path).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    try:
        matcher = _Matcher(lines)
    except Exception:  # a malformed pattern must not stop the run; git ignores them too
        return None
    return None if matcher.empty else matcher


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _posix(path: str) -> str:
    return path if os.sep == "/" else path.replace(os.sep, "/")
