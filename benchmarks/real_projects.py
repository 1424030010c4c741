"""Precision and recall of `patchaudit check` on real, public gevent and eventlet projects.

    python benchmarks/real_projects.py [--project NAME ...] [--timeout 300] [--markdown]
    python benchmarks/real_projects.py --update-template >> benchmarks/real_projects_labels.toml

The projects, their pinned versions and the labels live in ``real_projects_labels.toml`` next to
this file. Each project's sdist is downloaded from PyPI with pip (``--no-deps --no-binary NAME``:
the project itself as a source archive, its build requirements as wheels so that pip can read its
metadata without compiling Cython) into ``~/.cache/patchaudit-real-projects/`` (or
``$PATCHAUDIT_REAL_PROJECTS_CACHE``), unpacked there, and checked the way a new user would:
``cd project && patchaudit check --no-cache --format json .``. Nothing is written into this
repository.

Every warning and error finding is keyed by (project, code, path, line) and looked up in the
labels: ``true`` (a real mistake, or a claim that is right and worth acting on) or ``false``.
Info findings are counted but not graded. The labels file also lists the known real mistakes of
each project, those the tool reports and those it misses; they give the recall. Findings without
a label are printed so that a developer can label them (``--update-template`` prints TOML stubs),
and labels whose finding is gone are listed too: after an analyzer change, that is the diff.

The findings depend on the installed gevent and on the packages installed next to patchaudit
(the analyzer reads their source), so compare runs from the same environment.

Exit status: 0 whenever the benchmark ran (it measures, it does not gate); 2 when it cannot run
(no labels file, no pip, no project could be checked).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same fallback as patchaudit/_config.py
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
LABELS = Path(__file__).with_name("real_projects_labels.toml")
GRADED = ("warning", "error")  # info findings are advice, not claims of a mistake

Key = tuple[str, str, str, int]  # project, code, path relative to the checked folder, line


class BenchmarkError(Exception):
    """The benchmark cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    kind: str
    description: str
    subdir: str = ""  # check this folder of the sdist instead of its root
    extend_exclude: tuple[str, ...] = ()  # passed as --extend-exclude, each with its reason


@dataclass(frozen=True)
class Label:
    value: bool | None  # None: a stub from --update-template that nobody has decided yet
    reason: str
    kind: str = ""  # the false-positive class, so that analyzer fixes can target the biggest


@dataclass
class Labels:
    projects: list[Project]
    findings: dict[Key, Label]
    mistakes: dict[str, list[tuple[Key, str]]]  # per project: (key, reason)


@dataclass
class Outcome:
    project: Project
    findings: list[dict] = field(default_factory=list)  # warnings and errors only
    infos: int = 0
    error: str = ""
    seconds: float = 0.0
    tool_version: str = ""


def _key(project: str, entry: dict) -> Key:
    return (project, str(entry["code"]), str(entry["path"]), int(entry["line"]))


def load_labels(path: Path) -> Labels:
    """Read the projects, the finding labels and the known mistakes."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BenchmarkError(f"cannot read {path}: {exc}") from None
    try:
        projects = [
            Project(
                name=p["name"],
                version=p["version"],
                kind=p.get("kind", ""),
                description=p.get("description", ""),
                subdir=p.get("subdir", ""),
                extend_exclude=tuple(p.get("extend-exclude", ())),
            )
            for p in data.get("project", [])
        ]
        findings: dict[Key, Label] = {}
        for entry in data.get("finding", []):
            key = _key(entry["project"], entry)
            if key in findings:
                raise BenchmarkError(f"{path}: {key} is labelled twice")
            value = entry.get("label")
            # a stub says label = "todo": treat it as unlabelled rather than failing
            verdict = value if isinstance(value, bool) else None
            findings[key] = Label(verdict, entry.get("reason", ""), entry.get("class", ""))
        mistakes: dict[str, list[tuple[Key, str]]] = {}
        for entry in data.get("mistake", []):
            key = _key(entry["project"], entry)
            mistakes.setdefault(key[0], []).append((key, entry.get("reason", "")))
    except KeyError as exc:
        raise BenchmarkError(f"{path}: an entry has no {exc}") from None
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{path}: malformed entry ({exc})") from None
    if not projects:
        raise BenchmarkError(f"{path} lists no [[project]]")
    return Labels(projects, findings, mistakes)


def cache_root() -> Path:
    """Where sdists are downloaded and unpacked: never inside the repository."""
    root = os.environ.get("PATCHAUDIT_REAL_PROJECTS_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache/patchaudit-real-projects"
    path = path.resolve()
    if path == REPO or REPO in path.parents:
        raise BenchmarkError(f"the cache {path} must be outside the repository")
    return path


def download(project: Project, cache: Path) -> Path:
    """The sdist of project==version, downloaded once by pip into its own folder."""
    folder = cache / "sdists" / f"{project.name}-{project.version}"
    archives = sorted(folder.glob("*")) if folder.is_dir() else []
    if len(archives) == 1:
        return archives[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"  pip download {project.name}=={project.version}", file=sys.stderr, flush=True)
    # --no-binary NAME rather than :all:, so that build requirements (Cython, setuptools) come
    # as wheels: pip prepares the sdist's metadata and must not compile Cython to do it.
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", project.name, f"{project.name}=={project.version}", "-d", str(folder),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(folder.glob("*"))
    if result.returncode == 0 and len(archives) == 1 and archives[0].suffix == ".whl":
        result.stderr = f"pip fetched a wheel, not an sdist: {archives[0].name}"
        result.returncode = 1
    if result.returncode != 0 or len(archives) != 1:
        shutil.rmtree(folder, ignore_errors=True)
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise BenchmarkError(f"pip download failed: {lines[-1] if lines else result.returncode}")
    return archives[0]


def _check_member(name: str, is_link: bool, is_regular: bool) -> None:
    # Refuse rather than skip: an sdist with any of these is not one we want to unpack at all.
    parts = PurePosixPath(name.replace("\\", "/")).parts  # Windows zips may use backslashes
    if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")) or ".." in parts:
        raise BenchmarkError(f"unsafe path in archive: {name}")
    if is_link:
        raise BenchmarkError(f"link in archive: {name}")
    if not is_regular:
        raise BenchmarkError(f"special file in archive: {name}")


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a .tar.gz or .zip sdist, refusing absolute paths, `..`, links and devices."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                mode = info.external_attr >> 16
                _check_member(info.filename, (mode & 0o170000) == 0o120000, True)
            zipped.extractall(dest)
        return
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            _check_member(
                member.name, member.issym() or member.islnk(), member.isfile() or member.isdir()
            )
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+: also drops odd modes
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - older patch releases; the members were checked above
            tar.extractall(dest)


def unpack(project: Project, archive: Path, cache: Path) -> Path:
    """The folder to check: the sdist's single top-level folder (plus ``subdir``)."""
    target = cache / "src" / f"{project.name}-{project.version}"
    if not target.is_dir():
        (cache / "src").mkdir(parents=True, exist_ok=True)
        # unpack next to the target and rename, so an interrupted run leaves no half tree
        with tempfile.TemporaryDirectory(dir=cache / "src") as scratch:
            safe_extract(archive, Path(scratch) / "tree")
            os.replace(Path(scratch) / "tree", target)
    tops = [p for p in target.iterdir() if p.is_dir()]
    root = tops[0] if len(tops) == 1 else target
    root = root / project.subdir if project.subdir else root
    if not root.is_dir():
        raise BenchmarkError(f"{root} is not a folder")
    return root


def patchaudit_command() -> list[str]:
    """The console script next to this interpreter, as a user runs it.

    Not ``python -m patchaudit``: that puts the checked folder on ``sys.path`` and a project's
    own top-level packages (``locust/``, ``gunicorn/``) would shadow the installed ones that
    patchaudit reads.
    """
    script = Path(sys.executable).parent / "patchaudit"
    if not script.exists():
        raise BenchmarkError(
            f"no patchaudit next to {sys.executable}; run it with .venv/bin/python"
        )
    return [str(script)]


def run_check(project: Project, root: Path, timeout: float, jobs: int) -> Outcome:
    """Run the check in the project folder and keep its graded findings."""
    outcome = Outcome(project)
    command = [*patchaudit_command(), "check", "--no-cache", "--format", "json"]
    command += ["--jobs", str(jobs)]
    for pattern in project.extend_exclude:
        command += ["--extend-exclude", pattern]
    start = time.perf_counter()
    try:
        result = subprocess.run(
            [*command, "."], cwd=root, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        outcome.error = f"timed out after {timeout:.0f} s"
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        lines = result.stderr.strip().splitlines()
        outcome.error = f"exit {result.returncode}: {lines[-1] if lines else ''}"
        return outcome
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        outcome.error = "the JSON report did not parse"
        return outcome
    outcome.tool_version = document.get("tool", {}).get("version", "")
    for finding in document.get("findings", []):
        if finding.get("severity") in GRADED:
            outcome.findings.append(finding)
        else:
            outcome.infos += 1
    return outcome


@dataclass
class Score:
    findings: int = 0
    tp: int = 0
    fp: int = 0
    unlabelled: list[dict] = field(default_factory=list)
    found: int = 0
    mistakes: int = 0
    missed: list[tuple[Key, str]] = field(default_factory=list)
    gone: list[tuple[Key, Label]] = field(default_factory=list)  # labelled but not reported
    unlisted: list[Key] = field(default_factory=list)  # true findings missing from [[mistake]]
    fp_classes: Counter[str] = field(default_factory=Counter)

    def add(self, other: Score) -> None:
        self.findings += other.findings
        self.tp, self.fp = self.tp + other.tp, self.fp + other.fp
        self.found, self.mistakes = self.found + other.found, self.mistakes + other.mistakes
        self.unlabelled += other.unlabelled
        self.missed += other.missed
        self.gone += other.gone
        self.unlisted += other.unlisted
        self.fp_classes += other.fp_classes

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.found / self.mistakes if self.mistakes else None


def score(outcome: Outcome, labels: Labels) -> Score:
    """Grade one project's findings against the labels and its known mistakes."""
    name = outcome.project.name
    result = Score(findings=len(outcome.findings))
    known = labels.mistakes.get(name, [])
    known_keys = {key for key, _ in known}
    reported: set[Key] = set()
    for finding in outcome.findings:
        key = (name, finding["rule"], finding["path"], int(finding["line"]))
        reported.add(key)
        label = labels.findings.get(key)
        if label is None or label.value is None:
            result.unlabelled.append(finding)
        elif label.value:
            result.tp += 1
            if key not in known_keys:
                result.unlisted.append(key)
        else:
            result.fp += 1
            result.fp_classes[label.kind or "unclassified"] += 1
    if not outcome.error:  # a failed run says nothing about which labels went stale
        result.gone = [(k, v) for k, v in labels.findings.items() if k[0] == name]
        result.gone = [(k, v) for k, v in result.gone if k not in reported]
    result.mistakes = len(known)
    result.found = sum(key in reported for key, _ in known)
    result.missed = [(key, reason) for key, reason in known if key not in reported]
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _row(cells: list[str], markdown: bool) -> str:
    if markdown:
        return "| " + " | ".join(cells) + " |"
    widths = (18, 8, 5, 8, 4, 4, 6, 9, 6, 6, 6)
    return "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def report(outcomes: list[Outcome], scores: list[Score], markdown: bool) -> str:
    """The per-project table, then what needs a developer's attention."""
    head = "project version info findings TP FP unlab. precision known recall time".split()
    lines = [_row(head, markdown)]
    if markdown:
        lines.append("|" + "---|" * len(head))
    total = Score()
    for outcome, result in zip(outcomes, scores, strict=True):
        total.add(result)
        found = f"{result.found}/{result.mistakes}"
        cells = [
            outcome.project.name, outcome.project.version, str(outcome.infos),
            "failed" if outcome.error else str(result.findings), str(result.tp), str(result.fp),
            str(len(result.unlabelled)), _pct(result.precision), found, _pct(result.recall),
            f"{outcome.seconds:.1f}s",
        ]  # fmt: skip
        lines.append(_row(cells, markdown))
    seconds = sum(o.seconds for o in outcomes)
    cells = [
        "**overall**" if markdown else "overall", "", str(sum(o.infos for o in outcomes)),
        str(total.findings), str(total.tp), str(total.fp), str(len(total.unlabelled)),
        _pct(total.precision), f"{total.found}/{total.mistakes}", _pct(total.recall),
        f"{seconds:.1f}s",
    ]  # fmt: skip
    lines.append(_row(cells, markdown))
    if total.fp_classes:
        lines += ["", "false positives by class:", *([""] if markdown else [])]
        bullet = "- {n} `{kind}`" if markdown else "  {n:4}  {kind}"
        lines += [bullet.format(n=n, kind=kind) for kind, n in total.fp_classes.most_common()]
    if markdown:
        return "\n".join(lines)
    for outcome, result in zip(outcomes, scores, strict=True):
        notes = [f"  failed: {outcome.error}"] if outcome.error else []
        for f in result.unlabelled:
            where = f"{f['path']}:{f['line']}"
            notes.append(f"  unlabelled {f['rule']} {f['severity']} {where}: {f['message']}")
        for (_, code, path, line), reason in result.missed:
            notes.append(f"  missed {code} {path}:{line}: {reason}")
        for _, code, path, line in dict.fromkeys(result.unlisted):
            notes.append(f"  labelled true but not a [[mistake]]: {code} {path}:{line}")
        for (_, code, path, line), label in result.gone:
            verdict = {True: "TP", False: "FP", None: "stub"}[label.value]
            notes.append(f"  no longer reported ({verdict}) {code} {path}:{line}: {label.reason}")
        if notes:
            lines += ["", f"{outcome.project.name} {outcome.project.version}", *notes]
    return "\n".join(lines)


def template(outcomes: list[Outcome], scores: list[Score]) -> str:
    """TOML stubs for the unlabelled findings, to append to the labels file and edit."""
    chunks = []
    for outcome, result in zip(outcomes, scores, strict=True):
        for f in result.unlabelled:
            message = json.dumps(f"{f['severity']}: {f['message']}", ensure_ascii=False)
            chunks.append(
                "[[finding]]\n"
                f'project = "{outcome.project.name}"\n'
                f'code = "{f["rule"]}"\n'
                f"path = {json.dumps(f['path'])}\n"
                f"line = {int(f['line'])}\n"
                'label = "todo"  # true or false\n'
                f"reason = {message}\n"
            )
    return "\n".join(chunks)


def _commit() -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS, help="the labels TOML file")
    parser.add_argument("--project", action="append", help="only this project (repeatable)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per project")
    parser.add_argument("--jobs", type=int, default=1, help="patchaudit --jobs (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--update-template", action="store_true", help="print TOML stubs for unlabelled findings"
    )
    parser.add_argument("--json", type=Path, help="also write every finding to this file")
    args = parser.parse_args(argv)
    try:
        labels = load_labels(args.labels)
        projects = labels.projects
        if args.project:
            unknown = set(args.project) - {p.name for p in projects}
            if unknown:
                raise BenchmarkError(f"not in {args.labels.name}: {', '.join(sorted(unknown))}")
            projects = [p for p in projects if p.name in args.project]
        cache = cache_root()
        patchaudit_command()  # fail before the long part when there is nothing to run
        outcomes = []
        for index, project in enumerate(projects, 1):
            tag = f"[{index}/{len(projects)}] {project.name} {project.version}"
            print(f"{tag}: fetching", file=sys.stderr, flush=True)
            try:
                root = unpack(project, download(project, cache), cache)
            except BenchmarkError as exc:
                outcomes.append(Outcome(project, error=str(exc)))
                print(f"{tag}: {exc}", file=sys.stderr, flush=True)
                continue
            outcome = run_check(project, root, args.timeout, args.jobs)
            outcomes.append(outcome)
            status = outcome.error or f"{len(outcome.findings)} warnings/errors"
            print(f"{tag}: {status} ({outcome.seconds:.1f} s)", file=sys.stderr, flush=True)
        if all(o.error for o in outcomes):
            raise BenchmarkError("no project could be checked: " + outcomes[0].error)
    except (BenchmarkError, OSError) as exc:  # e.g. an unwritable cache: one line, no traceback
        print(f"real_projects: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("real_projects: interrupted", file=sys.stderr)
        return 130
    scores = [score(o, labels) for o in outcomes]
    if args.update_template:
        print(template(outcomes, scores))
        return 0
    version = next((o.tool_version for o in outcomes if o.tool_version), "?")
    # HEAD only: the working tree may hold uncommitted changes to the analyzer
    print(f"patchaudit {version}, HEAD {_commit()}, {len(outcomes)} projects, cache {cache}")
    print(report(outcomes, scores, args.markdown))
    if args.json:
        document = [
            {"project": o.project.name, "version": o.project.version, "error": o.error,
             "seconds": round(o.seconds, 2), "infos": o.infos, "findings": o.findings}
            for o in outcomes
        ]  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
