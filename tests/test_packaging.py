"""Packaging metadata: console, GUI and file scripts as launchers, the runtime frameworks the
project declares, and the top-level modules it ships. Launchers are written as in
tests/test_launchers.py; a script file's launcher is compared field by field.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchaudit.static._launchers import Launcher, declared_frameworks, find_launchers
from patchaudit.static._packaging import distributed_modules

from .test_launchers import expect, found, tree


def test_pyproject_scripts_gui_scripts_and_poetry_scripts(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "x"\n\n[project.scripts]\nmytool = "pkg.cli:main"\n'
    pyproject += 'other = "pkg.app:App.run [fast]"\n\n[project.gui-scripts]\n'
    pyproject += 'viewer = "pkg.gui:start"\n\n[tool.poetry.scripts]\npoe = "pkg.poe:main"\n'
    pyproject += 'bad = "not a target"\ntab = { reference = "pkg.tab:go", type = "console" }\n'
    assert found(tree(tmp_path, {"pyproject.toml": pyproject})) == expect("""
        pyproject.toml:5 console-script module=pkg.cli function=main
            console_scripts: mytool = pkg.cli:main
        pyproject.toml:6 console-script module=pkg.app function=App.run
            console_scripts: other = pkg.app:App.run [fast]
        pyproject.toml:9 gui-script module=pkg.gui function=start
            gui_scripts: viewer = pkg.gui:start
        pyproject.toml:12 console-script module=pkg.poe function=main
            console_scripts: poe = pkg.poe:main
        pyproject.toml:14 console-script module=pkg.tab function=go
            console_scripts: tab = pkg.tab:go
    """)


def test_setup_cfg_entry_points(tmp_path: Path) -> None:
    cfg = "[metadata]\nname = x\n\n[options.entry_points]\nconsole_scripts =\n"
    cfg += "    one = pkg.one:main\n    two=pkg.two:run\ngui_scripts =\n    win = pkg.win:main\n"
    assert found(tree(tmp_path, {"setup.cfg": cfg})) == expect("""
        setup.cfg:6 console-script module=pkg.one function=main
            console_scripts: one = pkg.one:main
        setup.cfg:7 console-script module=pkg.two function=run
            console_scripts: two = pkg.two:run
        setup.cfg:9 gui-script module=pkg.win function=main
            gui_scripts: win = pkg.win:main
    """)


def test_setup_py_literal_entry_points_only(tmp_path: Path) -> None:
    source = "from setuptools import setup\nENTRY = {\n    'console_scripts': [\n"
    source += "        'a = pkg.a:main',\n        make_entry(),\n    ],\n"
    source += "    'gui_scripts': 'g = pkg.g:run',\n}\nsetup(name='x', entry_points=ENTRY)\n"
    assert found(tree(tmp_path, {"setup.py": source})) == expect("""
        setup.py:4 console-script module=pkg.a function=main
            console_scripts: a = pkg.a:main
        setup.py:7 gui-script module=pkg.g function=run
            gui_scripts: g = pkg.g:run
    """)
    ini = "import setuptools\nsetuptools.setup(entry_points='''\n[console_scripts]\n"
    assert found(tree(tmp_path, {"setup.py": ini + "z = pkg.z:main\n''')\n"})) == expect("""
        setup.py:4 console-script module=pkg.z function=main
            console_scripts: z = pkg.z:main
    """)
    tree(tmp_path, {"setup.py": "from setuptools import setup\nsetup(entry_points=load())\n"})
    assert found(tmp_path) == ""  # not a literal: never evaluated


def test_declared_frameworks_counts_runtime_dependencies_only(tmp_path: Path) -> None:
    optional = '[project]\ndependencies = ["gunicorn>=22"]\n[project.optional-dependencies]\n'
    optional += 'gevent = ["gevent>=1.4.0"]\neventlet = ["eventlet"]\n'
    optional += '[dependency-groups]\ndev = ["gevent"]\n[tool.poetry.group.dev.dependencies]\n'
    optional += 'eventlet = "*"\n'
    assert declared_frameworks(tree(tmp_path / "a", {"pyproject.toml": optional}), 10**6) == set()
    websocket = '[project]\ndependencies = ["gevent-websocket", "geventhttpclient"]\n'
    websocket += '[tool.poetry.dependencies]\nFlask-Eventlet = "*"\ngevent_websocket = "*"\n'
    assert declared_frameworks(tree(tmp_path / "b", {"pyproject.toml": websocket}), 10**6) == set()
    pinned = '[project]\ndependencies = ["flask", "gevent>=24"]\n'
    found = declared_frameworks(tree(tmp_path / "c", {"pyproject.toml": pinned}), 10**6)
    assert found == {"gevent"}
    poetry = '[tool.poetry.dependencies]\npython = "^3.10"\nEventlet = "^0.36"\n'
    poetry += 'gevent = { version = "*", optional = true }\n'
    found = declared_frameworks(tree(tmp_path / "d", {"pyproject.toml": poetry}), 10**6)
    assert found == {"eventlet"}


def test_declared_frameworks_in_setup_files_and_requirements(tmp_path: Path) -> None:
    cfg = "[options]\ninstall_requires =\n    flask\n    gevent[recommended]>=23\n"
    cfg += "[options.extras_require]\nx = eventlet\n"
    assert declared_frameworks(tree(tmp_path / "a", {"setup.cfg": cfg}), 10**6) == {"gevent"}
    setup = "from setuptools import setup\nREQS = ['eventlet; python_version>\"3.8\"']\n"
    setup += "setup(install_requires=REQS, extras_require={'g': ['gevent']})\n"
    assert declared_frameworks(tree(tmp_path / "b", {"setup.py": setup}), 10**6) == {"eventlet"}
    reqs = "-r base.txt\n# gevent\ngevent==24.2.1 ; sys_platform != 'win32'\n"
    files = {"requirements/prod.txt": reqs, "requirements/dev.txt": "eventlet\n"}
    assert declared_frameworks(tree(tmp_path / "c", files), 10**6) == {"gevent"}
    files = {"requirements.txt": "gevent-websocket\n", "requirements.in": "Eventlet>=0.3\n"}
    assert declared_frameworks(tree(tmp_path / "d", files), 10**6) == {"eventlet"}
    files = {"pyproject.toml": "[project\n", "setup.py": "setup(install_requires=deps())"}
    assert declared_frameworks(tree(tmp_path / "e", files), 10**6) == set()
    big = {"requirements.txt": "gevent\n" + "#\n" * 100}
    assert declared_frameworks(tree(tmp_path / "f", big), 100) == set()


# -- distributed_modules ---------------------------------------------------------------------


def shipped(root: Path, files: dict[str, str]) -> frozenset[str]:
    return distributed_modules(tree(root, files), 10**6)


def test_setuptools_modules_and_packages_in_pyproject(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "python-socketio"\n[tool.setuptools]\npy-modules = ["single"]\n'
    pyproject += 'packages = ["socketio", "socketio.async_drivers", 3]\n'
    assert shipped(tmp_path, {"pyproject.toml": pyproject}) == {
        "python_socketio",
        "socketio",
        "single",
    }


def test_setuptools_package_finding_falls_back_to_the_name(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "Flask-SocketIO"\n[tool.setuptools.packages.find]\n'
    pyproject += 'where = ["src"]\n'
    assert shipped(tmp_path, {"pyproject.toml": pyproject}) == {"flask_socketio"}


def test_poetry_packages(tmp_path: Path) -> None:
    pyproject = '[tool.poetry]\nname = "locust-plugins"\npackages = [\n'
    pyproject += '    { include = "locust_plugins" },\n    { include = "extra/**/*.py" },\n'
    pyproject += '    { include = "lib", from = "src" },\n    { include = "mod.py" },\n'
    pyproject += '    { include = "tests", format = "sdist" },\n    { include = "*.py" },\n'
    pyproject += '    { include = "both", format = ["sdist", "wheel"] },\n    "junk",\n]\n'
    assert shipped(tmp_path, {"pyproject.toml": pyproject}) == {
        "locust_plugins",
        "extra",
        "lib",
        "mod",
        "both",
    }


def test_hatch_wheel_packages_and_flit_module(tmp_path: Path) -> None:
    hatch = '[project]\nname = "thing-python"\n[tool.hatch.build.targets.wheel]\n'
    hatch += 'packages = ["src/pkg", "lib/other/", "top"]\n'
    assert shipped(tmp_path / "a", {"pyproject.toml": hatch}) == {
        "thing_python",
        "thing",
        "pkg",
        "other",
        "top",
    }
    flit = '[project]\nname = "py-flit.thing"\n[tool.flit.module]\nname = "flitty.core"\n'
    assert shipped(tmp_path / "b", {"pyproject.toml": flit}) == {
        "py_flit_thing",
        "flit_thing",
        "flitty",
    }


def test_setup_cfg_modules_packages_and_find(tmp_path: Path) -> None:
    cfg = "[metadata]\nname = python-engineio\n[options]\npy_modules = one, two\n"
    cfg += "packages =\n    engineio\n    engineio.async_drivers\n"
    assert shipped(tmp_path / "a", {"setup.cfg": cfg}) == {
        "python_engineio",
        "engineio",
        "one",
        "two",
    }
    cfg = "[metadata]\nname = locust-plugins\n[options]\npackages = find:\n"
    cfg += "[options.packages.find]\nwhere = src\n"
    assert shipped(tmp_path / "b", {"setup.cfg": cfg}) == {"locust_plugins"}


def test_setup_py_literals_and_find_packages(tmp_path: Path) -> None:
    setup = "from setuptools import setup\nPACKAGES = ['dramatiq', 'dramatiq.brokers']\n"
    setup += "setup(name='dramatiq', py_modules=['mod', helper()], packages=PACKAGES)\n"
    assert shipped(tmp_path / "a", {"setup.py": setup}) == {"dramatiq", "mod"}
    setup = "from setuptools import setup, find_packages\n"
    setup += "setup(name='Foo.Bar-python', packages=find_packages(exclude=['tests']))\n"
    assert shipped(tmp_path / "b", {"setup.py": setup}) == {"foo_bar_python", "foo_bar"}
    setup = "import setuptools\nsetuptools.setup(name=NAME, packages=['a' + 'b'])\n"
    assert shipped(tmp_path / "c", {"setup.py": setup}) == frozenset()  # no literal: none


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"README.md": "# x\n", "app.py": "import gevent\n"},
        {"pyproject.toml": "[tool.ruff]\nline-length = 100\n"},
        {"pyproject.toml": '[project\nname = "x"\n'},
        {"setup.py": "setup(name='x'\n", "setup.cfg": "[metadata\nname = y\n"},
        {"pyproject.toml": '[project]\nname = "class"\n[tool.setuptools]\npackages = "x"\n'},
    ],
)
def test_no_packaging_metadata_ships_nothing(tmp_path: Path, files: dict[str, str]) -> None:
    assert shipped(tmp_path, files) == frozenset()


def test_metadata_behind_a_symlink_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", {"pyproject.toml": '[project]\nname = "stolen"\n'})
    root = tree(tmp_path / "root", {"setup.cfg": "[metadata]\nversion = 1\n"})
    (root / "pyproject.toml").symlink_to(outside / "pyproject.toml")
    assert distributed_modules(root, 10**6) == frozenset()


# -- script files ------------------------------------------------------------------------------

DRAMATIQ_GEVENT = """\
#!python
import sys
try:
    from gevent import monkey
    monkey.patch_all()
except ImportError:
    sys.exit(1)
from dramatiq.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def script(source: str, path: str, module: str | None, framework: str | None) -> Launcher:
    return Launcher("python", f"script: {path}", source, module, None, None, framework)


def test_setup_py_scripts_that_patch_and_do_not(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", {"evil": DRAMATIQ_GEVENT})
    setup = "from setuptools import setup\n\nsetup(\n    name='dramatiq',\n    scripts=[\n"
    setup += "        'bin/dramatiq-gevent',\n        './bin/plain',\n        'bin/missing',\n"
    setup += "        'bin/shell',\n        'bin/broken',\n        'bin/linked',\n"
    setup += "        '../outside/evil',\n        helper(),\n    ],\n)\n"
    plain = "#!/usr/bin/env python3\nfrom __future__ import annotations\nimport os\n"
    plain += "import worker.main as entry\nimport other\nentry.run()\n"
    files = {"setup.py": setup, "bin/dramatiq-gevent": DRAMATIQ_GEVENT, "bin/plain": plain}
    files |= {"bin/shell": "#!/bin/sh\nx = 1\n", "bin/broken": "import (\n"}
    root = tree(tmp_path / "root", files)
    (root / "bin" / "linked").symlink_to(outside / "evil")
    assert find_launchers(root) == (
        [
            script("setup.py:6", "bin/dramatiq-gevent", "dramatiq.cli", "gevent"),
            script("setup.py:7", "bin/plain", "worker.main", None),
        ],
        [],
    )


def test_setup_cfg_scripts_and_patch_spellings(tmp_path: Path) -> None:
    cfg = "[metadata]\nname = x\n[options]\nscripts = bin/a, bin/b\n    bin/c\n    bin/d\n"
    cfg += "    bin/e\n    bin/f\n"
    scripts = {
        "bin/a": "import gevent.monkey\ngevent.monkey.patch_all()\nimport app\n",
        "bin/b": "from gevent.monkey import patch_all as p\nimport eventlet\np()\n",
        "bin/c": "import eventlet as ev\nfrom app import run\nif __name__ == '__main__':\n"
        "    ev.monkey_patch()\n    run()\n",
        "bin/d": "from gevent import monkey\nimport os\nif os.environ.get('G'):\n"
        "    monkey.patch_all()\ndef main():\n    monkey.patch_all()\n",
        "bin/e": "import sys\nfrom . import app\npatch_all()\nsys.monkey.patch_all()\n",
        "bin/f": "",
    }
    launchers, problems = find_launchers(tree(tmp_path, {"setup.cfg": cfg, **scripts}))
    assert problems == []
    assert launchers == [
        script("setup.cfg:4", "bin/a", "app", "gevent"),
        script("setup.cfg:4", "bin/b", None, "gevent"),
        script("setup.cfg:5", "bin/c", "app", "eventlet"),
        script("setup.cfg:6", "bin/d", None, None),  # patches only when G is set, or later
        script("setup.cfg:7", "bin/e", None, None),
        script("setup.cfg:8", "bin/f", None, None),
    ]


def test_scripts_only_from_literal_lists(tmp_path: Path) -> None:
    files = {"bin/a": "import app\n", "setup.cfg": "[options]\nscripts = file: list.txt\n"}
    files["setup.py"] = "from setuptools import setup\nsetup(scripts=glob('bin/*'))\n"
    assert found(tree(tmp_path, files)) == ""
    setup = "from setuptools import setup\nSCRIPTS = ['bin/a']\nsetup(scripts=SCRIPTS)\n"
    assert found(tree(tmp_path, {"setup.py": setup, "setup.cfg": ""})) == expect("""
        setup.py:2 python module=app
            script: bin/a
    """)
