"""How fast can any Python-side analysis be? The parsers' floor against ruff, in one run.

    python benchmarks/parse_floor.py [--corpus a,c] [--repeat 5]

On the same files as ``static_check.py`` (its corpora, checked the same way), this times in
interleaved rounds:

* ``ruff check --isolated --no-cache --select F`` (all cores), the reference;
* ``python -c pass``: the start-up any Python tool pays before reading a byte;
* CPython's parser alone, ``compile(source, path, "exec", ast.PyCF_ONLY_AST)`` over every
  file, in one process and split over two (``os.fork``; the files shared out by size);
* tree-sitter's Python grammar alone, when ``tree-sitter`` and ``tree-sitter-python`` are
  installed (they are not dependencies of patchaudit: ``pip install tree-sitter
  tree-sitter-python`` to include them);
* ``patchaudit check --no-cache`` for comparison.

Each parser line is the work of reading and parsing only, before any visitor or rule runs: a
full analysis built on that parser can only be slower. The ratios say which of
``static_check.py``'s targets a Python implementation can meet at all on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _corpora
import static_check

PARSE_SNIPPET = """
import ast, os, sys, warnings
warnings.simplefilter("ignore")
files = sys.argv[2:]
shares = [files[i::int(sys.argv[1])] for i in range(int(sys.argv[1]))]
children = []
for share in shares[1:]:
    pid = os.fork()
    if pid == 0:
        for path in share:
            try:
                compile(open(path, "rb").read(), path, "exec", ast.PyCF_ONLY_AST)
            except (SyntaxError, ValueError):
                pass
        os._exit(0)
    children.append(pid)
for path in shares[0]:
    try:
        compile(open(path, "rb").read(), path, "exec", ast.PyCF_ONLY_AST)
    except (SyntaxError, ValueError):
        pass
for pid in children:
    os.waitpid(pid, 0)
"""

TREE_SITTER_SNIPPET = """
import sys
import tree_sitter_python
from tree_sitter import Language, Parser
parser = Parser(Language(tree_sitter_python.language()))
for path in sys.argv[1:]:
    parser.parse(open(path, "rb").read())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="a,c", help="a, b and/or c (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command (5)")
    args = parser.parse_args()
    keys = [k.strip() for k in args.corpus.split(",") if k.strip()]
    if not keys or set(keys) - {"a", "b", "c"}:
        parser.error("--corpus: choose from a, b, c")
    env = {k: v for k, v in os.environ.items() if k != "PATCHAUDIT_CACHE_DIR"}
    has_tree_sitter = _importable("tree_sitter_python") and _importable("tree_sitter")
    print(f"machine: {static_check.machine_info()}")
    with tempfile.TemporaryDirectory(prefix="patchaudit-floor-") as tmp:
        corpora = _corpora.build(keys, Path(tmp) / "corpora", 1)
        for corpus in corpora:
            excludes = _corpora.file_set(corpus, static_check.RUFF, env, static_check.run, None)
            files = _files(corpus, excludes)
            print(f"[{corpus.key}] {corpus.label}: {len(files):,} files")
            commands = {
                "ruff": [*static_check.RUFF, *excludes["ruff"], "."],
                "python -c pass": [sys.executable, "-c", "pass"],
                "CPython parser, 1 process": [sys.executable, "-c", PARSE_SNIPPET, "1", *files],
                "CPython parser, 2 processes": [
                    sys.executable, "-c", PARSE_SNIPPET, "2", *files
                ],
                "patchaudit check --no-cache": [
                    *static_check.PATCHAUDIT, "--no-cache", *corpus.pa_args, "."
                ],
            }  # fmt: skip
            if has_tree_sitter:
                commands["tree-sitter parser, 1 process"] = [
                    sys.executable, "-c", TREE_SITTER_SNIPPET, *files
                ]  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.repeat):
                for name, cmd in commands.items():
                    start = time.perf_counter()
                    done = subprocess.run(cmd, cwd=corpus.root, env=env, capture_output=True)
                    times[name].append(time.perf_counter() - start)
                    if done.returncode not in (0, 1):
                        print(f"{name} exited {done.returncode}: {done.stderr[-300:]!r}")
                        return 2
            ruff = statistics.median(times["ruff"])
            for name, values in times.items():
                median = statistics.median(values)
                print(f"  {name:<32} {median:8.3f} s  {median / ruff:7.2f}x ruff")
            if not has_tree_sitter:
                print("  (tree-sitter not installed: pip install tree-sitter tree-sitter-python)")
    return 0


def _files(corpus: _corpora.Corpus, excludes: dict) -> list[str]:
    shown = static_check.run(
        [*static_check.RUFF, *excludes["ruff"], "--show-files", "."], corpus.root, dict(os.environ)
    ).stdout.splitlines()
    files = [line.strip() for line in shown if line.strip().endswith(".py")]
    return sorted(files, key=lambda p: -os.path.getsize(p))


def _importable(name: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            __import__(name)
        except ImportError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
