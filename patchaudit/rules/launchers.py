"""MPA108: what a launcher's own settings do to patch order (gunicorn's `preload_app`).

The launchers come from the tree's Procfiles, Dockerfiles, service files and gunicorn configs
(``patchaudit.static._launchers``); each program records how it starts, and this rule reads
that, never the files themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._findings import Category, Severity
from ._model import Hit, Runner, rule


@rule(
    code="MPA108",
    name="gunicorn-preload-with-gevent-worker",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="gunicorn preloads the app in its master while the workers patch with gevent",
    message="`{setting}` {how} with gunicorn's {framework} worker: the master imports `{app}` "
    "before any worker patches",
    why="""
With `--preload` (`preload_app = True`) gunicorn's master imports the application once and forks
the workers from it; the gevent worker patches only after the fork. Everything the app imported
at module level (`requests` and `ssl`, database drivers, `from time import sleep`) ran unpatched
and is inherited by every worker (FM-02; gunicorn documents the limitation, gunicorn#1566). A
`preload_app` computed from the environment may be on in production: it is reported too, since
the source cannot say which. With `preload_app = True`, the imports that load patched modules
are also reported one by one (MPA101, MPA102).
""",
    fix="Drop `--preload` / `preload_app` for gevent workers, or patch before gunicorn imports "
    "anything: `python -m gevent.monkey --module gunicorn ...`, or `monkey.patch_all()` as the "
    "first lines of the config file.",
    bad="""
# gunicorn.conf.py
worker_class = "gevent"
preload_app = True
""",
    good="""
# gunicorn.conf.py
worker_class = "gevent"
""",
    references=("FM-02", "benoitc/gunicorn#1566", "benoitc/gunicorn#2796"),
    runners=Runner.PROJECT,
)
def check_preload(project) -> Iterator[Hit]:
    seen: set[str] = set()
    for program in project.programs:
        if program.kind != "gunicorn" or not program.patched_by or program.preload is False:
            continue
        if program.root in seen or program.source is None:
            continue
        seen.add(program.root)
        path, _, line = (program.preload_at or program.source).rpartition(":")
        yield Hit(
            path=project.shown_path(path),
            line=int(line) if line.isdigit() else 1,
            column=1,
            args={
                "setting": "preload_app" if path.endswith(".py") else "--preload",
                "how": "is on" if program.preload else "is an expression that may be true",
                "framework": program.patched_by,
                "app": program.entry,
            },
            evidence={"launcher": program.launcher},
        )
