"""Time `patchaudit check` against ruff and flake8 on the running interpreter's standard library.

    python benchmarks/static_check.py [--repeat 5] [--flake8-repeat 3] [--json results.json]

The corpus is ``sysconfig.get_paths()["stdlib"]`` without ``site-packages``. Every tool runs with
that folder as its working directory on ``.`` so that each one's exclude option applies (patchaudit
matches ``exclude`` patterns relative to its root, which is the working directory when there is
no ``pyproject.toml``). The three file lists are compared before anything is timed.

Timed, in interleaved rounds so that background load hits every tool alike:

* ``patchaudit check --no-cache`` (cold) and ``patchaudit check`` with a primed cache (warm), in the
  default mode (a project that never mentions gevent/eventlet is only pre-scanned) and with
  ``--framework gevent`` (every relevant file is parsed and the project rules run);
* ``ruff check --no-cache --select F`` and ``flake8 --select F -j auto``.

Then a robustness pass calls ``patchaudit.static._summary.summarize`` on every file, in process,
and cross-checks its parse errors against ``compile()``.

The tools are the ones next to ``sys.executable``. patchaudit is run with bytecode caching on (into
a temporary ``PYTHONPYCACHEPREFIX``) like an installed wheel; ``--no-bytecode-cache`` keeps
``PYTHONDONTWRITEBYTECODE`` from the environment instead. Exit status: 0 when every target is met
and every check passes, 1 otherwise, 2 when a tool fails (an exit status other than 0 or 1).

patchaudit's cache key includes the size and mtime of its own source files, so editing it while
the benchmark runs turns the warm runs cold (the script detects this and fails). To measure a
working tree that is being edited, time a copy:
``cp -r patchaudit /tmp/snap/ && PYTHONPATH=/tmp/snap python benchmarks/static_check.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

BIN = Path(sys.executable).parent
PATCHAUDIT = [str(BIN / "patchaudit"), "check", "."]
PA_COMMON = ["--exclude", "site-packages", "--format", "concise"]
FULL = ["--framework", "gevent"]
RUFF = [
    str(BIN / "ruff"),
    "check",
    "--isolated",
    "--no-cache",
    "--select",
    "F",
    "--output-format",
    "concise",
]
# patchaudit never walks folders named venv (and ruff's defaults skip them too); ruff would also
# take the one .pyi stub. Excluding both gives the three tools the same files.
RUFF_EXCLUDE = ["--exclude", "site-packages,venv,*.pyi"]
FLAKE8 = [
    str(BIN / "flake8"),
    "--isolated",
    "--select",
    "F",
    "-j",
    "auto",
    "--extend-exclude",
    "site-packages,venv",
]
OK_CODES = (0, 1)  # 1 = findings

TARGETS = [
    # (name, numerator, denominator, comparison, limit, description)
    ("cold", "patchaudit cold", "ruff", "<=", 2.0, "patchaudit cold / ruff <= 2"),
    ("warm", "patchaudit warm", "ruff", "<=", 0.5, "patchaudit warm / ruff cold <= 0.5"),
    ("flake8", "flake8", "patchaudit cold", ">=", 20.0, "flake8 / patchaudit cold >= 20"),
]


class ToolFailure(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per tool (default 5)")
    parser.add_argument("--flake8-repeat", type=int, default=3, help="flake8 runs (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--skip-flake8", action="store_true", help="do not time flake8")
    parser.add_argument("--skip-full", action="store_true", help="do not time --framework gevent")
    parser.add_argument("--skip-robustness", action="store_true", help="skip the robustness pass")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run patchaudit with the environment's bytecode settings",
    )
    args = parser.parse_args()

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": tool_versions(),
        "corpus": {"path": str(stdlib)},
        "ok": True,
    }
    print(f"corpus: {stdlib} (without site-packages)")
    print(f"machine: {describe_machine(results['machine'])}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))

    with tempfile.TemporaryDirectory(prefix="patchaudit-bench-") as tmp:
        env = dict(os.environ)
        env.pop("PATCHAUDIT_CACHE_DIR", None)
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        warm_env = {**env, "PATCHAUDIT_CACHE_DIR": os.path.join(tmp, "cache")}

        files = check_file_sets(stdlib, env, results)
        commands = {
            "patchaudit cold": (PATCHAUDIT + PA_COMMON + ["--no-cache"], env),
            "patchaudit warm": (PATCHAUDIT + PA_COMMON, warm_env),
            "ruff": (RUFF + RUFF_EXCLUDE + ["."], env),
        }
        if not args.skip_full:
            commands["patchaudit full cold"] = (PATCHAUDIT + PA_COMMON + FULL + ["--no-cache"], env)
            commands["patchaudit full warm"] = (PATCHAUDIT + PA_COMMON + FULL, warm_env)
        if not args.skip_flake8:
            commands["flake8"] = (FLAKE8 + ["."], dict(os.environ))
        results["commands"] = {name: " ".join(_short(c)) for name, (c, _) in commands.items()}

        # Untimed: fill the bytecode cache and prime the patchaudit result caches.
        for name, (cmd, run_env) in commands.items():
            if name.startswith("patchaudit"):
                run(cmd, stdlib, run_env)
        cache_dir = Path(warm_env["PATCHAUDIT_CACHE_DIR"])
        primed = _cache_files(cache_dir)
        timings = time_commands(commands, stdlib, args)
        results["timings"] = timings
        # The cache key covers patchaudit's own files: an edit during the runs makes them cold.
        results["warm_runs_hit_cache"] = _cache_files(cache_dir) == primed
        if not results["warm_runs_hit_cache"]:
            print(
                "\nWARNING: the warm runs wrote new cache files (was patchaudit's source edited "
                "while they ran?), so they were not warm; see PYTHONPATH in this script's doc"
            )
        report_timings(timings, results)

        results["analysis"] = check_analysis(stdlib, warm_env, args.skip_full)
        if not args.skip_full:
            results["cli_json"] = check_cli_json(stdlib, env)
    if not args.skip_robustness:
        results["robustness"] = robustness(stdlib, files)

    results["ok"] = (
        results["warm_runs_hit_cache"]
        and all(t["pass"] for t in results["targets"].values())
        and results["analysis"]["ok"]
        and results.get("cli_json", {}).get("ok", True)
        and results.get("robustness", {}).get("ok", True)
    )
    print(f"\noverall: {'PASS' if results['ok'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if results["ok"] else 1


# -- environment -------------------------------------------------------------------------------


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": ram_gib,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(m: dict) -> str:
    return (
        f"{m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"load average {m['load_average_at_start']}"
    )


def tool_versions() -> dict:
    versions = {}
    for tool in ("patchaudit", "ruff", "flake8"):
        out = subprocess.run([str(BIN / tool), "--version"], capture_output=True, text=True)
        versions[tool] = out.stdout.strip().removeprefix(f"{tool} ").split()[0]
    return versions


def _cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("files-*.json"))


def _short(cmd: list[str]) -> list[str]:
    return [Path(cmd[0]).name, *cmd[1:]]


# -- file sets ---------------------------------------------------------------------------------

_PATCHAUDIT_FILES = """
import json, os
from pathlib import Path
from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static._discover import discover
config = load_config([Path(".")], REGISTRY.keys(), {"exclude": ["site-packages"]})
files, problems = discover([Path(".")], exclude=config.exclude, root=config.root, cwd=Path.cwd(),
                           respect_gitignore=config.respect_gitignore)
print(json.dumps({"root": str(config.root), "config": str(config.source) if config.source else None,
                  "files": [str(f.path) for f in files], "problems": problems}))
"""
_FLAKE8_FILES = """
import json, os, sys
from flake8.main.application import Application
app = Application()
app.initialize(sys.argv[1:])
app.file_checker_manager.start()
print(json.dumps([os.path.abspath(f) for f in app.file_checker_manager.filenames]))
"""


def check_file_sets(stdlib: Path, env: dict, results: dict) -> list[Path]:
    """Make sure all three tools see the same files; return them."""
    pa = json.loads(run([sys.executable, "-c", _PATCHAUDIT_FILES], stdlib, env).stdout)
    if pa["config"] is not None or Path(pa["root"]).resolve() != stdlib:
        raise SystemExit(f"patchaudit found a configuration: root={pa['root']}, {pa['config']}")
    ruff_out = run(RUFF + RUFF_EXCLUDE + ["--show-files", "."], stdlib, env).stdout
    flake8_out = run([sys.executable, "-c", _FLAKE8_FILES, *FLAKE8[1:], "."], stdlib, env).stdout
    sets = {
        "patchaudit": {str(Path(p).resolve()) for p in pa["files"]},
        "ruff": {str(Path(p).resolve()) for p in ruff_out.splitlines() if p.strip()},
        "flake8": {str(Path(p).resolve()) for p in json.loads(flake8_out)},
    }
    reference = sets["patchaudit"]
    for name, found in sets.items():
        if found != reference:
            extra, missing = sorted(found - reference), sorted(reference - found)
            raise SystemExit(f"{name} sees other files: extra {extra[:5]}, missing {missing[:5]}")
    files = sorted(Path(p) for p in reference)
    lines = sum(_count_lines(p.read_bytes()) for p in files)
    size = sum(p.stat().st_size for p in files)
    results["corpus"].update(files=len(files), lines=lines, bytes=size, problems=pa["problems"])
    print(
        f"files: {len(files)} .py files, {lines:,} lines, {size / 1e6:.1f} MB, "
        "identical for patchaudit, ruff and flake8"
    )
    return files


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


# -- timing ------------------------------------------------------------------------------------


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode not in OK_CODES:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ToolFailure(f"{' '.join(_short(cmd))} exited {proc.returncode}: {' | '.join(tail)}")
    return proc


def time_once(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in OK_CODES:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise ToolFailure(f"{' '.join(_short(cmd))} exited {proc.returncode}: {' | '.join(tail)}")
    return elapsed, proc.returncode


def time_commands(commands: dict, cwd: Path, args: argparse.Namespace) -> dict:
    """Round-robin: round i runs every tool once, so load changes affect all of them."""
    runs: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, set[int]] = {name: set() for name in commands}
    rounds = max(args.repeat, 0 if args.skip_flake8 else args.flake8_repeat)
    for i in range(rounds):
        for name, (cmd, env) in commands.items():
            wanted = args.flake8_repeat if name == "flake8" else args.repeat
            if i >= wanted:
                continue
            elapsed, code = time_once(cmd, cwd, env)
            runs[name].append(elapsed)
            codes[name].add(code)
            print(f"  round {i + 1}: {name:<22} {elapsed:8.3f} s (exit {code})", flush=True)
    return {
        name: {
            "runs_s": [round(t, 4) for t in times],
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "exit_codes": sorted(codes[name]),
        }
        for name, times in runs.items()
        if times
    }


def report_timings(timings: dict, results: dict) -> None:
    print("\nmedians:")
    for name, t in timings.items():
        runs = len(t["runs_s"])
        print(f"  {name:<22} {t['median_s']:8.3f} s   (min {t['min_s']:.3f}, {runs} runs)")
    med = {name: t["median_s"] for name, t in timings.items()}
    ratios = {}
    pairs = [
        ("patchaudit cold / ruff", "patchaudit cold", "ruff"),
        ("patchaudit warm / ruff cold", "patchaudit warm", "ruff"),
        ("flake8 / patchaudit cold", "flake8", "patchaudit cold"),
        ("patchaudit full cold / ruff", "patchaudit full cold", "ruff"),
        ("patchaudit full warm / ruff cold", "patchaudit full warm", "ruff"),
        ("flake8 / patchaudit full cold", "flake8", "patchaudit full cold"),
    ]
    print("\nratios of medians:")
    for label, num, den in pairs:
        if num in med and den in med:
            ratios[label] = round(med[num] / med[den], 3)
            print(f"  {label:<34} {ratios[label]:8.2f}")
    results["ratios"] = ratios
    targets = {}
    print("\ntargets (default mode):")
    for key, num, den, op, limit, text in TARGETS:
        if num not in med or den not in med:
            continue
        value = med[num] / med[den]
        ok = value <= limit if op == "<=" else value >= limit
        targets[key] = {"target": text, "value": round(value, 3), "pass": ok}
        print(f"  {text:<36} {value:8.2f}  {'PASS' if ok else 'FAIL'}")
    results["targets"] = targets


# -- what patchaudit did -----------------------------------------------------------------------

_ANALYSIS = """
import json, sys
from pathlib import Path
from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import check
out = {}
for mode, framework in (("default", None), ("full", "gevent")):
    if mode == "full" and sys.argv[1] == "skip-full":
        continue
    config = load_config([Path(".")], REGISTRY.keys(),
                         {"exclude": ["site-packages"], "framework": framework})
    report = check([Path(".")], config, cwd=Path.cwd(), use_cache=True)
    out[mode] = {"files_seen": report.files_seen, "files_analyzed": report.files_analyzed,
                 "findings": len(report.findings), "errors": report.errors, "notes": report.notes}
print(json.dumps(out))
"""


def check_analysis(stdlib: Path, warm_env: dict, skip_full: bool) -> dict:
    """files seen / parsed per mode, read from the (primed) cache of the timed runs."""
    flag = "skip-full" if skip_full else "full"
    out = json.loads(run([sys.executable, "-c", _ANALYSIS, flag], stdlib, warm_env).stdout)
    print("\nwhat patchaudit did:")
    ok = True
    for mode, info in out.items():
        internal = [e for e in info["errors"] if "internal error" in e]
        ok &= not internal
        print(
            f"  {mode:<8} {info['files_seen']} files seen, {info['files_analyzed']} parsed and "
            f"analysed, {info['findings']} findings, {len(info['errors'])} errors "
            f"({len(internal)} internal)"
        )
        for note in info["notes"]:
            print(f"           note: {note}")
    out["ok"] = ok
    return out


def check_cli_json(stdlib: Path, env: dict) -> dict:
    cmd = PATCHAUDIT + [
        "--exclude",
        "site-packages",
        "--framework",
        "gevent",
        "--format",
        "json",
        "--no-cache",
    ]
    document = json.loads(run(cmd, stdlib, env).stdout)
    internal = [e for e in document["errors"] if "internal error" in e]
    by_rule: dict[str, int] = {}
    for finding in document["findings"]:
        by_rule[finding["rule"]] = by_rule.get(finding["rule"], 0) + 1
    print(
        f"\n`{' '.join(_short(cmd))}`: {len(document['findings'])} findings "
        f"{document['summary']}, {len(document['errors'])} errors, "
        f"{len(internal)} internal errors {'PASS' if not internal else 'FAIL'}"
    )
    for error in internal:
        print(f"  {error}")
    return {
        "findings": len(document["findings"]),
        "findings_by_rule": dict(sorted(by_rule.items())),
        "summary": document["summary"],
        "errors": document["errors"],
        "internal_errors": internal,
        "ok": not internal,
    }


# -- robustness --------------------------------------------------------------------------------


def robustness(stdlib: Path, benchmark_files: list[Path]) -> dict:
    """summarize() every .py file outside site-packages (no pre-scan); compare with compile()."""
    import ast

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
    extra = len(files) - len(benchmark_files)
    print(
        f"\nrobustness: summarize() on {len(files)} files ({extra} more than the timed set: "
        f"venv/ is walked here) in {elapsed:.1f} s"
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ToolFailure as exc:
        print(f"tool failure: {exc}", file=sys.stderr)
        sys.exit(2)
