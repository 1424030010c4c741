"""Time `patchaudit check` against ruff (and flake8) on the corpora that matter, in one run.

    python benchmarks/static_check.py [--corpus a,b,c,d,one-file] [--repeat 3] [--json FILE]

Corpora (``_corpora.py``; copies under a temporary folder, since the warm runs edit a file): (a)
the gevent 26.9.0 sdist, ``extend-exclude = ["src/greentest"]`` for both tools; (b) the running
venv's site-packages, ``--framework gevent``; (c) the stdlib, ``--framework gevent`` and the
default mode (pre-scan only); (d) a monorepo of renamed copies of ``fixtures/examples/shop`` at
1x/4x/16x; a one-file project. patchaudit's discovery and ``ruff check --show-files`` (and
flake8's list with ``--flake8``) must give the same ``.py`` files before anything is timed.

Timed in interleaved rounds (each round runs every command of every corpus once, so background
load hits all alike; medians of ``--repeat``): ``patchaudit check --no-cache`` (cold; on (c) also
``-j 1``); ``patchaudit check`` warm (cache primed by an untimed run, then one file edited
before every timed run: a comment appended, which changes no summary, and on (a), (b), (c) also
an import appended, which does and so runs the project stage again; the one-file project is
not edited); ``ruff check
--isolated --no-cache --select F``; ``python -c pass``; ``flake8 --select F -j auto`` on (c) with
``--flake8`` (about 100 s a run). Every run of a corpus in one mode (cold, ``-j 1``, warm) must
give the same findings and programs in its JSON report. Peak memory comes from each corpus's
untimed first cold run: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a wrapper process (largest
process of the tree), and a sampled sum of the tree's RSS. A robustness pass then runs
``summarize()`` on every stdlib file and cross-checks its parse errors with ``compile()``.

Targets (2-core machine): see ``RATIO_TARGETS``; also peak memory < 300 MB on (b) and, on (d),
the cold time per file at 16x within 20 % of 1x, leaving out the fixed cost (the cold time of a
one-package monorepo, ``d-base``, timed in the same rounds; raw times per file are printed too).
Exit status: 0 when every target is met and every check passes, 1 otherwise, 2 when a tool fails
or a corpus cannot be built.

The tools are those next to ``sys.executable``. patchaudit runs with bytecode caching on (into a
temporary ``PYTHONPYCACHEPREFIX``) like an installed wheel; ``--no-bytecode-cache`` keeps the
environment's settings. patchaudit's cache key covers its own source files, so editing them
while the benchmark runs makes the warm runs cold (detected: FAIL). To measure a working tree
that others are editing, time a copy:
``cp -r patchaudit /tmp/snap/ && PYTHONPATH=/tmp/snap python benchmarks/static_check.py``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _corpora
import real_projects
from _corpora import Corpus, SetupError

BIN = Path(sys.executable).parent
PATCHAUDIT = [str(BIN / "patchaudit"), "check", "--format", "json"]
RUFF = [str(BIN / "ruff"), "check", "--isolated", "--no-cache", "--select", "F"]
RUFF += ["--output-format", "concise"]
FLAKE8 = [str(BIN / "flake8"), "--isolated", "--select", "F", "-j", "auto"]
OK_CODES = (0, 1)  # 1 = findings
MB = 1e6


class ToolFailure(Exception):
    pass


@dataclass
class Run:
    corpus: Corpus
    name: str  # "cold", "warm", "cold -j 1", "ruff", ...
    cmd: list[str]
    env: dict
    mode: str = ""  # patchaudit: the findings group ("full", "auto", "pre-scan")
    edit: str = ""  # before each timed run, append to the corpus's file: EDITS[edit]
    repeat: int = 0  # 0: --repeat
    output: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.corpus.key}: {self.name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=",".join(_corpora.ALL), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per command (3)")
    parser.add_argument("--monorepo-base", type=int, default=128, help="packages at 1x (128)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--flake8", action="store_true", help="also time flake8 on (c)")
    parser.add_argument("--flake8-repeat", type=int, default=3, help="flake8 runs (3)")
    parser.add_argument("--skip-flake8", action="store_true", help=argparse.SUPPRESS)  # default
    parser.add_argument("--skip-robustness", action="store_true", help="skip the robustness pass")
    bytecode = "run patchaudit with the environment's bytecode settings"
    parser.add_argument("--no-bytecode-cache", action="store_true", help=bytecode)
    args = parser.parse_args()
    keys = [k.strip() for k in args.corpus.split(",") if k.strip()]
    if not keys or set(keys) - set(_corpora.ALL):
        parser.error(f"--corpus: choose from {','.join(_corpora.ALL)}")
    results: dict = {"date": _now(), "machine": machine_info(), "ok": True}
    with tempfile.TemporaryDirectory(prefix="patchaudit-bench-") as tmp:
        ws = Path(tmp)
        env = dict(os.environ)
        env.pop("PATCHAUDIT_CACHE_DIR", None)
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(ws / "pycache")
        results["versions"] = tool_versions(env, args.flake8)
        print_header(results)
        corpora = _corpora.build(keys, ws / "corpora", args.monorepo_base)
        runs = plan(corpora, env, ws, args)
        results["commands"] = {r.key: " ".join(_short(r.cmd)) for r in runs}
        results["corpora"] = {
            c.key: {"label": c.label, "root": str(c.root), **c.info} for c in corpora
        }
        results["memory"] = prime(runs)
        caches = {r.key: _cache_files(r) for r in runs if r.name.startswith("warm")}
        reports: dict[str, list[dict]] = {}
        results["timings"] = time_runs(runs, args, reports)
        results["checks"] = checks(runs, caches, reports, ws, results.setdefault("reports", {}))
        results["analysis"] = analysis(runs)
        results["targets"] = evaluate(results, corpora)
    if "c" in keys and not args.skip_robustness:
        stdlib = Path(results["corpora"]["c"]["source"])
        results["robustness"] = _corpora.robustness(stdlib, results["corpora"]["c"]["files"])
        results["checks"]["robustness"] = results["robustness"]["ok"]
    results["machine"]["load_average_at_end"] = _load()
    results["machine"]["uptime_at_end"] = _uptime()
    print_tables(results, corpora)
    passed = [t["passed"] for t in results["targets"].values()]
    results["ok"] = all(passed) and all(results["checks"].values())
    print(f"\noverall: {'PASS' if results['ok'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if results["ok"] else 1


def _pa(
    c: Corpus, name: str, extra: list[str], mode: str, ws: Path, env: dict, warm: bool, edit: str
) -> Run:
    """A patchaudit run; it writes its JSON report to its own file, its cache to its own folder."""
    folder = f"{c.key}-{name.replace(' ', '')}"
    cache = ws / ("cache" if warm else "cold-cache") / folder
    out = ws / "out" / f"{folder}.json"
    out.parent.mkdir(exist_ok=True)
    cmd = [*PATCHAUDIT, *extra, *([] if warm else ["--no-cache"]), "--output", str(out), "."]
    env = {**env, "PATCHAUDIT_CACHE_DIR": str(cache)}
    return Run(c, name, cmd, env, mode, edit=edit if warm and c.edit else "", output=out)


def plan(corpora: list[Corpus], env: dict, ws: Path, args: argparse.Namespace) -> list[Run]:
    """The commands per corpus, after checking that the tools see the same files."""
    runs: list[Run] = []
    for c in corpora:

        def pa(
            name: str, extra: list[str], mode: str, warm: bool, edit: str = "comment", c=c
        ) -> Run:
            return _pa(c, name, extra, mode, ws, env, warm, edit)

        excludes = _corpora.file_set(
            c, RUFF, env, run, FLAKE8 if args.flake8 and c.key == "c" else None
        )
        info = c.info
        print(
            f"[{c.key}] {c.label}: {info['files']:,} .py files, {info['lines']:,} lines, "
            f"{info['bytes'] / MB:.1f} MB, the same for {' and '.join(info['same_files'])}"
        )

        mode = "full" if "--framework" in c.pa_args else "auto"
        ruff = Run(c, "ruff", [*RUFF, *excludes["ruff"], "."], env)
        if c.key == "one-file":
            runs += [
                pa("warm", c.pa_args, mode, True),
                Run(c, "python -c pass", [sys.executable, "-c", "pass"], env),
            ]
            continue
        runs.append(pa("cold", c.pa_args, mode, False))
        if c.key == "c":
            runs.append(pa("cold -j 1", [*c.pa_args, "--jobs", "1"], mode, False))
            if os.cpu_count() != 2:
                runs.append(pa("cold -j 2", [*c.pa_args, "--jobs", "2"], mode, False))
        if c.edit:
            runs.append(pa("warm", c.pa_args, mode, True))
            if c.key in "abc":  # the project stage runs again: a summary changed
                runs.append(pa("warm, import", c.pa_args, mode, True, "import"))
        runs.append(ruff)
        if c.key == "c":  # the default mode: the stdlib never mentions gevent, so pre-scan only
            runs += [
                pa("pre-scan cold", [], "pre-scan", False),
                pa("pre-scan warm", [], "pre-scan", True),
            ]
            if args.flake8:
                cmd = [*FLAKE8, *excludes["flake8"], "."]
                runs.append(Run(c, "flake8", cmd, dict(os.environ), repeat=args.flake8_repeat))
    return runs


# -- environment -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine_info() -> dict:
    cpu, ram_gib = platform.processor(), None
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu
        )
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in ln)
        ram_gib = round(int(mem.split()[1]) / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "ram_gib": ram_gib,
            "platform": platform.platform(), "load_average_at_start": _load(),
            "uptime_at_start": _uptime()}  # fmt: skip


_WHERE = """
import hashlib, json, pathlib, patchaudit
top = pathlib.Path(patchaudit.__file__).parent
digest = hashlib.sha256()
for path in sorted(top.rglob("*.py")):
    digest.update(path.relative_to(top).as_posix().encode() + b"\\0" + path.read_bytes())
print(json.dumps({"path": str(top), "sha256": digest.hexdigest()[:16]}))
"""


def tool_versions(env: dict, flake8: bool) -> dict:
    versions = {"python": sys.version.split()[0]}
    for tool in ("patchaudit", "ruff", *(["flake8"] if flake8 else [])):
        proc = subprocess.run(
            [str(BIN / tool), "--version"], env=env, capture_output=True, text=True
        )
        if proc.returncode or not proc.stdout.strip():
            raise ToolFailure(f"{tool} --version exited {proc.returncode}: {proc.stderr[-300:]}")
        versions[tool] = proc.stdout.strip().removeprefix(f"{tool} ").split()[0]
    try:
        versions["gevent"] = importlib.metadata.version("gevent")
    except importlib.metadata.PackageNotFoundError:
        versions["gevent"] = "not installed"
    where = json.loads(run([*_corpora.PY, "-c", _WHERE], Path.cwd(), env).stdout)
    versions["patchaudit_from"], versions["patchaudit_sha256"] = where["path"], where["sha256"]
    versions["repository_head"] = real_projects._commit()
    return versions


def print_header(results: dict) -> None:
    m, v = results["machine"], results["versions"]
    print(f"date: {results['date']}")
    print(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, {m['platform']}")
    print(f"load average at start: {m['load_average_at_start']} ({m['uptime_at_start']})")
    names = [k for k in ("python", "patchaudit", "ruff", "gevent", "flake8") if k in v]
    print("versions: " + ", ".join(f"{k} {v[k]}" for k in names))
    print(
        f"patchaudit imported from {v['patchaudit_from']} (sources sha256 "
        f"{v['patchaudit_sha256']}), repository HEAD {v['repository_head']}"
    )
    if Path(v["patchaudit_from"]).resolve().is_relative_to(_corpora.REPO):
        print(
            "WARNING: timing the working tree itself; if it is being edited, time a snapshot "
            "(PYTHONPATH, see this script's doc)"
        )


def _cache_files(r: Run) -> list[str]:
    return sorted(p.name for p in Path(r.env["PATCHAUDIT_CACHE_DIR"]).glob("files-*.json*"))


def _short(cmd: list[str]) -> list[str]:
    return [Path(cmd[0]).name, *cmd[1:]]


# -- running -----------------------------------------------------------------------------------


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode not in OK_CODES:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ToolFailure(f"{' '.join(_short(cmd))} exited {proc.returncode}: {' | '.join(tail)}")
    return proc


def time_once(r: Run) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        r.cmd, cwd=r.corpus.root, env=r.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - start
    if proc.returncode not in OK_CODES:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise ToolFailure(f"{' '.join(_short(r.cmd))} exited {proc.returncode}: {' | '.join(tail)}")
    return elapsed, proc.returncode


def prime(runs: list[Run]) -> dict:
    """Untimed: fill the bytecode cache, prime the warm caches; take memory on the first cold
    run of each corpus (the one-file project: its priming warm run)."""
    memory, measured = {}, set()
    for r in runs:
        if not r.output:
            continue
        if r.corpus.key not in measured and (r.name == "cold" or r.corpus.key == "one-file"):
            measured.add(r.corpus.key)
            out = run([*_corpora.PY, "-c", _corpora.MEMORY, *r.cmd], r.corpus.root, r.env).stdout
            mem = json.loads(out.strip().splitlines()[-1])
            if mem["code"] not in OK_CODES:
                raise ToolFailure(f"{' '.join(_short(r.cmd))} exited {mem['code']}")
            peaks = {"max_rss_bytes": mem["max_rss"], "tree_peak_rss_bytes": mem["tree_peak"]}
            memory[r.corpus.key] = {"run": r.name, **peaks}
        elif r.name.startswith("warm"):
            run(r.cmd, r.corpus.root, r.env)
    return memory


def time_runs(runs: list[Run], args: argparse.Namespace, reports: dict) -> dict:
    """Round-robin over every command of every corpus; warm runs edit their file first."""
    times: dict[str, list[float]] = {r.key: [] for r in runs}
    codes: dict[str, set[int]] = {r.key: set() for r in runs}
    for i in range(max(r.repeat or args.repeat for r in runs)):
        print(f"round {i + 1} ({_now()}, load {_load()})", flush=True)
        for r in runs:
            if i >= (r.repeat or args.repeat):
                continue
            edited = r.corpus.root / r.corpus.edit
            size = edited.stat().st_size if r.edit else 0
            if r.edit:
                with open(edited, "a") as handle:
                    handle.write(EDITS[r.edit].format(i + 1))
            elapsed, code = time_once(r)
            if r.edit == "import":  # taken back, or the other warm run would see a new summary
                os.truncate(edited, size)
            times[r.key].append(elapsed)
            codes[r.key].add(code)
            if r.output:
                reports.setdefault(r.key, []).append(json.loads(r.output.read_text()))
            print(f"  {r.key:<24} {elapsed:8.3f} s (exit {code})", flush=True)
    return {
        key: {
            "runs_s": [round(t, 4) for t in ts],
            "median_s": round(statistics.median(ts), 4),
            "min_s": round(min(ts), 4),
            "exit_codes": sorted(codes[key]),
        }
        for key, ts in times.items()
        if ts
    }


# -- checks ------------------------------------------------------------------------------------


def checks(runs: list[Run], caches: dict, reports: dict, ws: Path, details: dict) -> dict:
    """The same findings in every run of a corpus and mode; warm hits; cold writes nothing."""
    out: dict[str, bool] = {}
    print("\nchecks:")
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for r in runs:
        for report in reports.get(r.key, []):
            groups.setdefault((r.corpus.key, r.mode), []).append((r.name, report))
    out.update(_corpora.compare(groups, details))
    for r in runs:
        if r.key in caches:
            hit = _cache_files(r) == caches[r.key]
            out[f"{r.key}: the warm runs used the primed cache"] = hit
            if not hit:
                print(f"  FAIL {r.key}: new cache files (was patchaudit edited while it ran?)")
    cold = [p for p in (ws / "cold-cache").rglob("*") if p.is_file()]
    stray = [
        str(c.root)
        for c in {id(r.corpus): r.corpus for r in runs}.values()
        if (c.root / ".patchaudit_cache").exists()
    ]
    out["the --no-cache runs wrote no cache"] = not cold and not stray
    print(
        f"  --no-cache runs wrote no cache: {'PASS' if not cold and not stray else 'FAIL'}"
        f"{' ' + str(cold[:3] + stray[:3]) if cold or stray else ''}"
    )
    return out


def analysis(runs: list[Run]) -> dict:
    """Files seen / parsed per corpus and mode, in process, from the (warm) cache if any."""
    first: dict[tuple[str, str], Run] = {}
    for r in sorted((r for r in runs if r.output), key=lambda r: not r.name.startswith("warm")):
        first.setdefault((r.corpus.key, r.mode), r)
    items = [(r.corpus, r.mode, r.env) for r in first.values()]
    return _corpora.analysis(items, run)


# -- targets and tables ------------------------------------------------------------------------


# What a warm run appends to its corpus's file. A comment changes the file but no summary, so
# the project stage's stored output is reused; an import changes the summary (a new import at a
# new line), so the stage runs again: the edit of a user changing code.
EDITS = {
    "comment": "\n# static_check.py edit {}\n",
    "import": "\nimport os  # static_check.py edit {}\n",
}

RATIO_TARGETS = [  # (name, numerator, denominator, comparison, limit)
    *[t for k in "abc" for t in (
        (f"{k}: cold / ruff", f"{k}: cold", f"{k}: ruff", "<=", 2.0),
        (f"{k}: warm (1 file edited) / ruff cold", f"{k}: warm", f"{k}: ruff", "<=", 0.5),
        (f"{k}: warm (an import added) / ruff cold", f"{k}: warm, import", f"{k}: ruff", "<=",
         0.5))],
    ("c: -j 1 / -j 2 speed-up", "c: cold -j 1", "c: cold" if os.cpu_count() == 2
     else "c: cold -j 2", ">=", 1.6),
    ("c: pre-scan cold / ruff", "c: pre-scan cold", "c: ruff", "<=", 2.0),
    ("c: pre-scan warm (1 file edited) / ruff cold", "c: pre-scan warm", "c: ruff", "<=", 0.5),
    ("c: flake8 / pre-scan cold", "c: flake8", "c: pre-scan cold", ">=", 20.0),
    ("one-file: warm / python -c pass", "one-file: warm", "one-file: python -c pass", "<=", 5.0),
]  # fmt: skip


def evaluate(results: dict, corpora: list[Corpus]) -> dict:
    med = {k: t["median_s"] for k, t in results["timings"].items()}
    out: dict[str, dict] = {}

    def target(name: str, value: float, op: str, limit: float, unit: str = "x") -> None:
        ok = value <= limit if op == "<=" else value < limit if op == "<" else value >= limit
        out[name] = dict(value=round(value, 3), op=op, limit=limit, unit=unit, passed=ok)

    for name, num, den, op, limit in RATIO_TARGETS:
        if num in med and den in med:
            target(name, med[num] / med[den], op, limit)
    if "b" in results["memory"]:
        mem = results["memory"]["b"]["max_rss_bytes"] / MB
        target("b: peak memory (largest process)", mem, "<", 300, " MB")
    base = results["corpora"].get("d-base")
    if base and {"d1x", "d16x"} <= {c.key for c in corpora}:
        per_file = results["per_file"] = {}
        for c in corpora:
            if c.key.startswith("d") and c.key != "d-base":
                extra = med[f"{c.key}: cold"] - med["d-base: cold"]
                per_file[c.key] = {
                    "raw_ms": 1000 * med[f"{c.key}: cold"] / c.info["files"],
                    "marginal_ms": 1000 * extra / (c.info["files"] - base["files"]),
                }
        value = per_file["d16x"]["marginal_ms"] / per_file["d1x"]["marginal_ms"]
        target("d: cold per file, 16x / 1x (fixed cost left out)", value, "<=", 1.2)
    order = "a b c d one-file".split()
    return dict(sorted(out.items(), key=lambda item: order.index(item[0].split(":")[0])))


def print_tables(results: dict, corpora: list[Corpus]) -> None:
    med = results["timings"]
    print("\n" + "=" * 100)
    print(
        f"date {results['date']}; load average {results['machine']['load_average_at_start']} "
        f"at start, {results['machine']['load_average_at_end']} at end"
    )
    print(f"{'corpus':<10} {'files':>7} {'run':<16} {'median':>9} {'min':>9}  ratio")
    for c in corpora:
        ref = "ruff" if f"{c.key}: ruff" in med else "python -c pass"
        for key, t in med.items():
            if not key.startswith(f"{c.key}: "):
                continue
            name = key.split(": ", 1)[1]
            rel = ""
            if name != ref and f"{c.key}: {ref}" in med:
                rel = f"{t['median_s'] / med[f'{c.key}: {ref}']['median_s']:7.2f}x {ref}"
            print(
                f"{c.key:<10} {c.info.get('files', 1):>7,} {name:<16} {t['median_s']:8.3f}s "
                f"{t['min_s']:8.3f}s  {rel}"
            )
        mem = results["memory"].get(c.key)
        if mem:
            print(
                f"{c.key:<10} {'':>7} {'peak memory':<16} {mem['max_rss_bytes'] / MB:7.0f} MB "
                f"largest process, {mem['tree_peak_rss_bytes'] / MB:.0f} MB whole tree (sampled "
                f"RSS sum) in its {mem['run']} run"
            )
    for key, pf in results.get("per_file", {}).items():
        print(
            f"{key:<10} cold per file: {pf['raw_ms']:.3f} ms raw, {pf['marginal_ms']:.3f} ms "
            "without the fixed cost (d-base)"
        )
    print(f"\n{'target':<52} {'value':>10} {'limit':>10}  result")
    for name, t in results["targets"].items():
        value = f"{t['value']:.2f}{t['unit'].strip() or 'x'}"
        print(
            f"{name:<52} {value:>10} {t['op'] + ' ' + str(t['limit']):>10}  "
            f"{'PASS' if t['passed'] else 'FAIL'}"
        )
    for name, ok in results["checks"].items():
        print(f"check: {name:<80} {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ToolFailure as exc:
        print(f"tool failure: {exc}", file=sys.stderr)
        sys.exit(2)
    except (SetupError, real_projects.BenchmarkError) as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        sys.exit(2)
