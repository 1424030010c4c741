"""The launchers of a checked tree: every format, gevent and not, and the untrusted-tree rules.

Expected launchers are written one per two lines: ``source kind`` and every field that is not
empty (``module=``, ``path=``, ``function=``, ``framework=``, ``preload=``, ``hooks=``), then the
command, indented. A field left out is None (or no hooks), so the comparison is exact.
Packaging metadata (scripts, declared frameworks, shipped modules): tests/test_packaging.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from textwrap import dedent

import pytest

from patchaudit.static import _discover
from patchaudit.static._launchers import Launcher, declared_frameworks, find_launchers


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def show(launchers: list[Launcher]) -> str:
    lines = []
    for x in launchers:
        fields = {"module": x.module, "path": x.path, "function": x.function}
        fields |= {"framework": x.framework, "preload": x.preload, "hooks": x.hooks or None}
        shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        lines += [f"{x.source} {x.kind} {shown}".rstrip(), f"    {x.command}"]
    return "\n".join(lines)


def found(root: Path, **kwargs: object) -> str:
    launchers, problems = find_launchers(root, **kwargs)  # type: ignore[arg-type]
    assert problems == []
    return show(launchers)


def expect(text: str) -> str:
    return dedent(text).strip("\n")


def test_procfile_gunicorn_workers_preload_and_prefixes(tmp_path: Path) -> None:
    procfile = (
        "web: gunicorn -k gevent --bind 0.0.0.0:$PORT --access-logfile - app:app\n"
        "# a comment\n"
        "sync: gunicorn -w 4 myproj.wsgi\n"
        "pre: FOO=1 exec gunicorn --worker-class=eventlet --preload 'app:create_app()'\n"
        "ws: gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker chat:app\n"
        "uv: A=1 poetry run gunicorn -k uvicorn.workers.UvicornWorker api:app\n"
        "env: GUNICORN_CMD_ARGS='--worker-class gevent' gunicorn site:app\n"
        'shell: sh -c "cd /srv && exec python -m gunicorn -kgevent_pywsgi app:app"\n'
    )
    assert found(tree(tmp_path, {"Procfile": procfile})) == expect("""
        Procfile:1 gunicorn module=app function=app framework=gevent preload=False
            gunicorn -k gevent --bind '0.0.0.0:$PORT' --access-logfile - app:app
        Procfile:3 gunicorn module=myproj.wsgi preload=False
            gunicorn -w 4 myproj.wsgi
        Procfile:4 gunicorn module=app function=create_app framework=eventlet preload=True
            gunicorn --worker-class=eventlet --preload 'app:create_app()'
        Procfile:5 gunicorn module=chat function=app framework=gevent preload=False
            gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker chat:app
        Procfile:6 gunicorn module=api function=app preload=False
            gunicorn -k uvicorn.workers.UvicornWorker api:app
        Procfile:7 gunicorn module=site function=app framework=gevent preload=False
            gunicorn site:app
        Procfile:8 gunicorn module=app function=app framework=gevent preload=False
            python -m gunicorn -kgevent_pywsgi app:app
    """)


def test_celery_pools(tmp_path: Path) -> None:
    procfile = (
        "a: celery -A proj worker -l info -P gevent -c 500\n"
        "b: celery --app=proj.celery:app worker --pool=eventlet\n"
        "c: celery worker -A proj -Pgevent -E\n"
        "d: celery -A proj worker --concurrency 4\n"
        "e: celery -A proj beat\n"
        "f: celery -A proj inspect ping\n"
    )
    assert found(tree(tmp_path, {"Procfile": procfile})) == expect("""
        Procfile:1 celery module=proj framework=gevent
            celery -A proj worker -l info -P gevent -c 500
        Procfile:2 celery module=proj.celery function=app framework=eventlet
            celery --app=proj.celery:app worker --pool=eventlet
        Procfile:3 celery module=proj framework=gevent
            celery worker -A proj -Pgevent -E
        Procfile:4 celery module=proj
            celery -A proj worker --concurrency 4
        Procfile:5 celery module=proj
            celery -A proj beat
    """)


def test_uwsgi_command_line_and_ini(tmp_path: Path) -> None:
    procfile = "web: uwsgi --http :8000 --master --gevent 100 --module app:application\n"
    procfile += "plain: uwsgi --http :8000 -w site:app\n"
    ini = "[uwsgi]\nhttp = :8000\nwsgi-file = wsgi.py\ngevent = 1000\n"
    files = {"Procfile": procfile, "deploy/uwsgi.ini": ini, "deploy/wsgi.py": ""}
    assert found(tree(tmp_path, {**files, "tox.ini": "[tox]\nenvlist = py311\n"})) == expect("""
        Procfile:1 uwsgi module=app function=application framework=gevent
            uwsgi --http :8000 --master --gevent 100 --module app:application
        Procfile:2 uwsgi module=site function=app
            uwsgi --http :8000 -w site:app
        deploy/uwsgi.ini:3 uwsgi path=deploy/wsgi.py framework=gevent
            uwsgi --ini deploy/uwsgi.ini
    """)


def test_locust_gevent_monkey_and_python(tmp_path: Path) -> None:
    procfile = (
        "l1: locust -f load/users.py,load/admin.py --headless\n"
        "l2: locust --headless -u 10\n"
        "m1: python -m gevent.monkey --module myapp.main --port 80\n"
        "m2: python3 -m gevent.monkey tools/serve.py\n"
        "p1: python -u tools/run.py\n"
        "p2: python3.12 -W ignore -m pkg.worker\n"
        "p3: python -m pip install -r requirements.txt && python -c 'import app'\n"
    )
    files = {"Procfile": procfile, "load/users.py": "", "load/admin.py": "", "locustfile.py": ""}
    tree(tmp_path, {**files, "tools/serve.py": "", "tools/run.py": ""})
    assert found(tmp_path) == expect("""
        Procfile:1 locust path=load/admin.py framework=gevent
            locust -f load/users.py,load/admin.py --headless
        Procfile:1 locust path=load/users.py framework=gevent
            locust -f load/users.py,load/admin.py --headless
        Procfile:2 locust path=locustfile.py framework=gevent
            locust --headless -u 10
        Procfile:3 gevent-monkey module=myapp.main framework=gevent
            python -m gevent.monkey --module myapp.main --port 80
        Procfile:4 gevent-monkey path=tools/serve.py framework=gevent
            python3 -m gevent.monkey tools/serve.py
        Procfile:5 python path=tools/run.py
            python -u tools/run.py
        Procfile:6 python module=pkg.worker
            python3.12 -W ignore -m pkg.worker
    """)


def test_locust_package_default_from_a_relative_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree(tmp_path, {"bench/Procfile": "load: locust\n", "bench/locustfile/__init__.py": ""})
    monkeypatch.chdir(tmp_path / "bench")
    assert found(Path("..")) == expect("""
        bench/Procfile:1 locust module=locustfile framework=gevent
            locust
    """)


def test_dockerfile_forms_and_entrypoint_with_cmd(tmp_path: Path) -> None:
    dockerfile = (
        "FROM python:3.12 AS base\n"
        "WORKDIR /app\n"
        "COPY . /app\n"
        "RUN --mount=type=cache,target=/root/.cache pip install -r req.txt \\\n"
        "    && python manage.py collectstatic\n"
        'ENTRYPOINT ["gunicorn"]\n'
        'CMD ["-k", "gevent", "app:app"]\n'
        "FROM base AS worker\n"
        'ENTRYPOINT ["tini", "--"]\n'
        'CMD ["celery", "-A", "proj", "worker", "-P", "gevent"]\n'
        "FROM base AS plain\n"
        "cmd exec python -m gevent.monkey /app/serve.py\n"
    )
    tree(tmp_path, {"Dockerfile": dockerfile, "manage.py": "", "serve.py": ""})
    assert found(tmp_path) == expect("""
        Dockerfile:4 python path=manage.py
            python manage.py collectstatic
        Dockerfile:6 gunicorn module=app function=app framework=gevent preload=False
            gunicorn -k gevent app:app
        Dockerfile:10 celery module=proj framework=gevent
            celery -A proj worker -P gevent
        Dockerfile:12 gevent-monkey path=serve.py framework=gevent
            python -m gevent.monkey /app/serve.py
    """)


def test_compose_command_forms(tmp_path: Path) -> None:
    compose = (
        "services:\n"
        "  web:\n"
        "    command: gunicorn -k gevent app:app  # the server\n"
        "  worker:\n"
        '    command: ["celery", "-A", "proj", "worker", "--pool", "gevent"]\n'
        "  beat:\n"
        "    entrypoint:\n"
        "      - python\n"
        "      - -m\n"
        "      - pkg.tick\n"
        "  shell:\n"
        "    command: >\n"
        '      sh -c "python tools/run.py\n'
        '      && exec locust -f load.py"\n'
        "  flow:\n"
        "    command: [uwsgi, --gevent, '10', --module, 'site:app']\n"
    )
    tree(tmp_path, {"docker-compose.yml": compose, "tools/run.py": "", "load.py": ""})
    assert found(tmp_path) == expect("""
        docker-compose.yml:3 gunicorn module=app function=app framework=gevent preload=False
            gunicorn -k gevent app:app
        docker-compose.yml:5 celery module=proj framework=gevent
            celery -A proj worker --pool gevent
        docker-compose.yml:7 python module=pkg.tick
            python -m pkg.tick
        docker-compose.yml:12 locust path=load.py framework=gevent
            locust -f load.py
        docker-compose.yml:12 python path=tools/run.py
            python tools/run.py
        docker-compose.yml:16 uwsgi module=site function=app framework=gevent
            uwsgi --gevent 10 --module site:app
    """)


def test_systemd_supervisord_shell_and_make(tmp_path: Path) -> None:
    service = "[Unit]\nDescription=web\n\n[Service]\nUser=app\nEnvironment=A=1\n"
    service += "WorkingDirectory=/srv\nExecStartPre=/bin/true\n"
    service += "ExecStart=-/srv/venv/bin/gunicorn \\\n    -k eventlet wsgi:app\n"
    supervisor = "[supervisord]\nnodaemon=true\n\n[program:worker]\n"
    supervisor += "command=/venv/bin/celery -A proj worker -P gevent\n"
    script = "#!/bin/sh\nset -e\n# gunicorn -k gevent commented:app\n"
    script += 'if [ -n "$DEBUG" ]; then\n  exec python -m flask run\nfi\n'
    script += 'exec gunicorn -k gevent --config "$CONF" app:app "$@"\n'
    files = {"deploy/web.service": service, "deploy/supervisord.conf": supervisor}
    files |= {"bin/start.sh": script, "Makefile": "run:\n\t@python -m gevent.monkey --module a.b\n"}
    assert found(tree(tmp_path, files)) == expect("""
        Makefile:2 gevent-monkey module=a.b framework=gevent
            python -m gevent.monkey --module a.b
        bin/start.sh:5 python module=flask
            python -m flask run
        bin/start.sh:7 gunicorn module=app function=app framework=gevent preload=False
            gunicorn -k gevent --config '$CONF' app:app '$@'
        deploy/supervisord.conf:5 celery module=proj framework=gevent
            /venv/bin/celery -A proj worker -P gevent
        deploy/web.service:9 gunicorn module=wsgi function=app framework=eventlet preload=False
            /srv/venv/bin/gunicorn -k eventlet wsgi:app
    """)


HOOKED = """\
import multiprocessing
bind = "0.0.0.0:8000"
worker_class = "gevent"
workers = multiprocessing.cpu_count() * 2

def post_fork(server, worker):
    pass

def when_ready(server):
    pass

def worker_exit(server, worker):
    pass

on_exit = print
"""


def test_gunicorn_config_file_is_a_launcher_with_its_hooks(tmp_path: Path) -> None:
    launchers, problems = find_launchers(tree(tmp_path, {"gunicorn.conf.py": HOOKED}))
    assert problems == []
    assert launchers == [
        Launcher(
            kind="gunicorn",
            command="gunicorn -c gunicorn.conf.py (worker_class = 'gevent')",
            source="gunicorn.conf.py:3",
            module=None,
            path=None,
            function=None,
            framework="gevent",
            preload=False,
            hooks=(
                ("on_exit", "master"),
                ("post_fork", "worker"),
                ("when_ready", "master"),
                ("worker_exit", "worker"),
            ),
        )
    ]


def test_gunicorn_command_takes_its_config(tmp_path: Path) -> None:
    conf = "wsgi_app = 'site.wsgi:make()'\npreload_app = os.environ.get('PRELOAD') == '1'\n"
    conf += "worker_class = 'sync'\ndef pre_fork(server, worker):\n    pass\n"
    procfile = "web: gunicorn -c deploy/gconf.py -k gevent\nweb2: gunicorn -c python:deploy.gconf\n"
    files = {"Procfile": procfile, "deploy/gconf.py": conf, "gunicorn_dev.py": "worker_class = 1\n"}
    files["gunicorn_prod.py"] = "bind = ':80'\n"  # named like a config, but sets no worker class
    assert found(tree(tmp_path, files)) == expect("""
        Procfile:1 gunicorn module=site.wsgi function=make framework=gevent hooks=(('pre_fork', 'master'),)
            gunicorn -c deploy/gconf.py -k gevent
        Procfile:2 gunicorn module=site.wsgi function=make hooks=(('pre_fork', 'master'),)
            gunicorn -c python:deploy.gconf
        deploy/gconf.py:3 gunicorn module=site.wsgi function=make hooks=(('pre_fork', 'master'),)
            gunicorn -c deploy/gconf.py (preload_app = <expression>, worker_class = 'sync', wsgi_app = 'site.wsgi:make()')
        gunicorn_dev.py:1 gunicorn preload=False
            gunicorn -c gunicorn_dev.py (worker_class = 1)
    """)  # noqa: E501


def test_gunicorn_default_config_and_conditional_values(tmp_path: Path) -> None:
    conf = "preload_app = True\nif DEBUG:\n    worker_class = 'gevent'\n"
    tree(tmp_path, {"Procfile": "web: gunicorn app:app\n", "gunicorn.conf.py": conf})
    assert found(tmp_path) == expect("""
        Procfile:1 gunicorn module=app function=app preload=True
            gunicorn app:app
        gunicorn.conf.py:3 gunicorn preload=True
            gunicorn -c gunicorn.conf.py (preload_app = True, worker_class = <expression>)
    """)


@pytest.mark.parametrize(
    "files",
    [
        {"pyproject.toml": '[project.scripts]\nx = "pkg:main"\n[project.scripts\n'},
        {"setup.cfg": "[options.entry_points\nconsole_scripts =\n    x = pkg:main\n"},
        {"setup.py": "setup(entry_points={'console_scripts': ['x = pkg:main']}\n"},
        {"gunicorn.conf.py": "worker_class = 'gevent'\ndef post_fork(:\n"},
        {"Procfile": "web: gunicorn -k gevent 'app:app\n"},
        {"Dockerfile": 'FROM x\nCMD ["gunicorn", "-k", "gevent", \n'},
        {"uwsgi.ini": "[uwsgi\nmodule = app:app\ngevent = 10\n"},
        {"docker-compose.yml": 'services:\n  web:\n    command: "gunicorn \\\n'},
        {"x.service": "[Service]\nExecStart=\n", "run.sh": "exec \\\n"},
        {"Procfile": "web: \x00\xff gunicorn\nw: python a\x00.py\n"},
    ],
)
def test_malformed_files_give_no_launcher_and_no_exception(
    tmp_path: Path, files: dict[str, str]
) -> None:
    launchers, problems = find_launchers(tree(tmp_path, files))
    assert launchers == [] and len(problems) <= 1
    assert all("\n" not in problem for problem in problems)


def test_problems_say_which_file(tmp_path: Path) -> None:
    tree(tmp_path, {"Procfile": "ok: true\nweb: gunicorn 'app:app\n", "gunicorn.conf.py": "x = ("})
    launchers, problems = find_launchers(tree(tmp_path, {"pyproject.toml": "[", "setup.py": "("}))
    assert launchers == []
    # an unsplittable command line is skipped silently: shell scripts have thousands of them
    files = ["gunicorn.conf.py", "pyproject.toml", "setup.py"]
    assert [p.split(":")[0] for p in problems] == files


def test_a_symlink_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", {"passwd": "web: gunicorn -k gevent stolen:app\n"})
    tree(outside, {"deploy/Procfile": "web: gunicorn -k gevent stolen2:app\n"})
    root = tree(tmp_path / "root", {"real/Procfile": "web: gunicorn inside:app\n"})
    (root / "Procfile").symlink_to(outside / "passwd")
    (root / "deploy").symlink_to(outside / "deploy", target_is_directory=True)
    (root / "gunicorn.conf.py").symlink_to(outside / "passwd")
    (root / "Procfile.inside").symlink_to(root / "real" / "Procfile")
    tree(root, {"pyproject.toml": '[project]\nscripts = {x = "a:b"}\n'})
    (root / "setup.cfg").symlink_to(outside / "passwd")
    launchers, problems = find_launchers(root)
    assert [(x.source, x.module) for x in launchers] == [
        ("Procfile.inside:1", "inside"),
        ("pyproject.toml:2", "a"),
        ("real/Procfile:1", "inside"),
    ]
    assert problems == [
        "skipped Procfile: symlink to outside the project root, not followed",
        "skipped gunicorn.conf.py: symlink to outside the project root, not followed",
    ]
    (root / "requirements.txt").symlink_to(outside / "passwd")
    (outside / "passwd").write_text("gevent\n")
    assert declared_frameworks(root, 1000) == frozenset()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_procfile_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "Procfile")
    os.mkfifo(tmp_path / "pyproject.toml")
    os.mkfifo(tmp_path / "requirements.txt")
    started = time.monotonic()
    launchers, problems = find_launchers(tmp_path)
    assert launchers == [] and problems == ["skipped Procfile: not a regular file"]
    assert declared_frameworks(tmp_path, 1000) == frozenset()
    assert time.monotonic() - started < 2


def test_a_file_over_the_limit_is_skipped(tmp_path: Path) -> None:
    big = "web: gunicorn -k gevent big:app\n" + "# padding\n" * 200
    tree(tmp_path, {"Procfile": big, "deploy/Procfile": "web: gunicorn small:app\n"})
    launchers, problems = find_launchers(tmp_path, limit=1000)
    assert [x.module for x in launchers] == ["small"]
    assert problems == ["skipped Procfile: over the 1000-byte size limit"]


def test_pruning_exclude_and_gitignore(tmp_path: Path) -> None:
    line = "web: gunicorn -k gevent app:app\n"
    names = ["node_modules", ".venv", "build", "pkg.egg-info", "lib/site-packages", "ignored"]
    tree(tmp_path, {f"{name}/Procfile": line for name in [*names, "excluded", "env", "kept"]})
    tree(tmp_path, {".gitignore": "ignored/\n", "env/pyvenv.cfg": ""})
    launchers, _ = find_launchers(tmp_path, exclude=["excluded/"])
    assert [x.source for x in launchers] == ["kept/Procfile:1"]
    launchers, _ = find_launchers(tmp_path, exclude=["excluded/"], respect_gitignore=False)
    assert [x.source for x in launchers] == ["ignored/Procfile:1", "kept/Procfile:1"]


def test_the_walk_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = "/".join(f"d{i}" for i in range(14))
    tree(
        tmp_path, {f"{deep}/Procfile": "w: gunicorn deep:app\n", "a/Procfile": "w: gunicorn a:a\n"}
    )
    launchers, _ = find_launchers(tmp_path)
    assert [x.module for x in launchers] == ["a"]  # 14 folders down: not looked at
    monkeypatch.setattr(_discover, "WALK_LIMITS", (12, 1))
    assert find_launchers(tmp_path) == ([], ["stopped looking after 1 entries"])
