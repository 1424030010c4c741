"""MPA109 and the import sorters it reads (patchaudit/static/_sorters.py), against the real tools.

Real isort and ruff run on the fixtures under patchaudit's process supervisor: isort with the
fixture's `float_to_top` floats the imports above the patch until `check --fix` adds the split
line; ruff's `I` rules never move an import across the call, which is why they alone are not
a reason for the rule; ruff's E402 on the imports below is the same before and after the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from patchaudit._exec import exec_command
from patchaudit._process import spawn
from patchaudit.static._sorters import ImportSorters, import_sorters

from .conftest import FIXTURES, isolated_copy, require, run_cli, write_project
from .test_stage_cache import _settle as settle

BAD = FIXTURES / "rules" / "MPA109" / "bad"
PATCH = "monkey.patch_all()  # MPA109"
LIMIT = 1 << 20


def _tool(name: str, *args: str, cwd: Path) -> tuple[int, str]:
    """Run the venv's ``name`` supervised (it dies with us), bounded to a minute."""
    program = shutil.which(name, path=os.path.dirname(sys.executable))
    assert program is not None, f"{name} is in the test extra"
    out = cwd.parent / f"{name}.out"
    with open(out, "wb") as handle:
        child = spawn(exec_command([program, *args]), cwd=cwd, stdout=handle, deadline=60)
        try:
            code = child.wait(timeout=60)
        finally:
            child.kill()
    return code, out.read_text()


def _order(path: Path) -> list[str]:
    """The statements that matter, in file order: the patch call and the imports."""
    lines = path.read_text().splitlines()
    return [line for line in lines if line.startswith(("import ", "monkey.", "from gevent"))]


def test_isort_floats_the_imports_above_the_patch_until_fixed(tmp_path: Path) -> None:
    require("isort")
    project = isolated_copy(BAD, tmp_path / "a")
    _tool("isort", "service.py", cwd=project)
    # `import os  # isort: skip` stays; the other import floats above the patch call
    assert _order(project / "service.py") == [
        "import logging.handlers",
        "from gevent import monkey",
        PATCH,
        "import os  # isort: skip",
    ]

    fixed = isolated_copy(BAD, tmp_path / "b")
    result = run_cli("check", "--fix", ".", cwd=fixed)
    assert result.returncode == 0, result.stdout + result.stderr
    after_fix = (fixed / "service.py").read_text()
    assert f"{PATCH}\n# isort: split\n" in after_fix
    _tool("isort", "service.py", cwd=fixed)
    assert _order(fixed / "service.py") == [
        "from gevent import monkey",
        PATCH,
        "import logging.handlers",
        "import os  # isort: skip",
    ]
    assert _tool("isort", "--check-only", "service.py", cwd=fixed)[0] == 0


def test_isort_skip_on_the_call_does_not_keep_the_imports_below(tmp_path: Path) -> None:
    """Why MPA109 does not take `# isort: skip` on the call as protection."""
    require("isort")
    project = isolated_copy(BAD, tmp_path)
    service = project / "service.py"
    skipped = "monkey.patch_all()  # isort: skip"
    service.write_text(service.read_text().replace(PATCH, skipped))
    _tool("isort", "service.py", cwd=project)
    assert _order(service) == [
        "import logging.handlers",
        "from gevent import monkey",
        skipped,
        "import os  # isort: skip",
    ]


def _ruff(project: Path, *args: str) -> tuple[int, str]:
    return _tool("ruff", "check", "--isolated", *args, "service.py", cwd=project)


def test_ruff_never_moves_an_import_across_the_patch(tmp_path: Path) -> None:
    project = isolated_copy(BAD, tmp_path)
    before = _order(project / "service.py")
    _ruff(project, "--select", "I", "--fix")
    assert _order(project / "service.py") == before


def test_the_fix_leaves_ruff_e402_as_it_was(tmp_path: Path) -> None:
    project = isolated_copy(BAD, tmp_path)

    def e402() -> list[int]:
        _, out = _ruff(project, "--select", "E402", "--output-format", "json")
        return [d["location"]["row"] for d in json.loads(out)]

    assert e402() == [7, 8]
    run_cli("check", "--fix", ".", cwd=project)
    assert e402() == [8, 9]  # the same two imports, one line lower


SORTED = "from gevent import monkey\nmonkey.patch_all()\nimport logging.handlers\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # isort's settings, wherever isort reads them; floating only with float_to_top
        (
            {"pyproject.toml": "[tool.isort]\nfloat_to_top = true\n"},
            ImportSorters(
                "pyproject.toml [tool.isort]", "", "float_to_top in pyproject.toml [tool.isort]"
            ),
        ),
        (
            {"pyproject.toml": '[tool.isort]\nprofile = "black"\n'},
            ImportSorters("pyproject.toml [tool.isort]"),
        ),
        (
            {"setup.cfg": "[isort]\nfloat_to_top = True\nskip = legacy, build\n"},
            ImportSorters(
                "setup.cfg [isort]", "", "float_to_top in setup.cfg [isort]", ("legacy", "build")
            ),
        ),
        (
            {"tox.ini": "[tool:isort]\nfloat-to-top = yes\n"},
            ImportSorters("tox.ini [tool:isort]", "", "float_to_top in tox.ini [tool:isort]"),
        ),
        # the first file with an isort section wins, as in isort: .isort.cfg before pyproject
        (
            {".isort.cfg": "[settings]\n", "pyproject.toml": "[tool.isort]\nfloat_to_top = true\n"},
            ImportSorters(".isort.cfg"),
        ),
        # ruff selecting its isort rules: configured, never floating
        (
            {"pyproject.toml": '[tool.ruff.lint]\nextend-select = ["I"]\n'},
            ImportSorters("", "pyproject.toml [tool.ruff]"),
        ),
        ({"ruff.toml": 'select = ["ALL"]\n'}, ImportSorters("", "ruff.toml [ruff]")),
        ({"ruff.toml": 'select = ["E", "F"]\n'}, ImportSorters()),
        # a pre-commit isort hook: isort 4 floats by default, later ones only when told to
        (
            {
                ".pre-commit-config.yaml": "repos:\n- repo: https://github.com/PyCQA/isort\n"
                "  rev: 4.3.21\n  hooks:\n  - id: isort\n"
            },
            ImportSorters(
                ".pre-commit-config.yaml (isort hook)", "", "isort 4 in .pre-commit-config.yaml"
            ),
        ),
        (
            {
                ".pre-commit-config.yaml": "repos:\n- repo: https://github.com/PyCQA/isort\n"
                "  rev: 5.13.2\n  hooks:\n  - id: isort\n"
            },
            ImportSorters(".pre-commit-config.yaml (isort hook)"),
        ),
    ],
)
def test_the_sorters_a_tree_configures(
    tmp_path: Path, files: dict[str, str], expected: ImportSorters
) -> None:
    write_project(tmp_path, files)
    assert import_sorters(tmp_path, LIMIT) == expected


def test_settings_outside_the_tree_are_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside.cfg"
    outside.write_text("[isort]\nfloat_to_top = true\n")
    project = write_project(tmp_path / "project", {"app.py": SORTED})
    (project / "setup.cfg").symlink_to(outside)
    assert import_sorters(project, LIMIT) == ImportSorters()


def test_a_file_isort_skips_is_not_reported() -> None:
    sorters = ImportSorters("setup.cfg [isort]", "", "float_to_top", ("legacy", "gen_*.py"))
    assert sorters.moves_imports("app.py") == "float_to_top"
    assert sorters.moves_imports("legacy/app.py") == ""
    assert sorters.moves_imports("pkg/gen_app.py") == ""


FLOAT = {"pyproject.toml": "[tool.patchaudit]\n\n[tool.isort]\nfloat_to_top = true\n"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (FLOAT | {"app.py": SORTED}, [("MPA109", 2)]),
        # `# isort: skip` on the call keeps nothing below it in place (measured above)
        (FLOAT | {"app.py": SORTED.replace("()\n", "()  # isort: skip\n")}, [("MPA109", 2)]),
        # nothing floats: isort 5+ without float_to_top, or ruff alone
        ({"pyproject.toml": "[tool.patchaudit]\n\n[tool.isort]\n", "app.py": SORTED}, []),
        ({"ruff.toml": 'select = ["I"]\n', "app.py": SORTED}, []),
        # the file keeps isort out: a split line, skip_file, a region turned off
        (FLOAT | {"app.py": SORTED.replace("()\n", "()\n# isort: split\n")}, []),
        (FLOAT | {"app.py": "# isort: skip_file\n" + SORTED}, []),
        (FLOAT | {"app.py": "# isort: off\n" + SORTED + "# isort: on\n"}, []),
        # every import below is skipped, or the patch is not a module-level statement
        (FLOAT | {"app.py": SORTED.replace("handlers\n", "handlers  # isort: skip\n")}, []),
        (
            FLOAT
            | {
                "app.py": "from gevent import monkey\nif True:\n    monkey.patch_all()\nimport os\n"
            },
            [],
        ),
    ],
)
def test_mpa109_is_reported_only_when_isort_would_move_the_imports(
    tmp_path: Path, files: dict[str, str], expected: list[tuple[str, int]]
) -> None:
    project = write_project(tmp_path, {})
    for name, text in files.items():
        (project / name).write_text(text)
    result = run_cli("check", "--format", "json", "--select", "MPA109", ".", cwd=project)
    assert result.returncode in (0, 1), result.stderr
    found = [(f["rule"], f["line"]) for f in json.loads(result.stdout)["findings"]]
    assert found == expected


def test_a_changed_sorter_setting_is_seen_by_a_warm_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sorters are an input of the project stage: editing setup.cfg alone (no source, no
    [tool.patchaudit] change) must not replay the stored output."""
    monkeypatch.setenv("PATCHAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    project = write_project(tmp_path / "project", {"app.py": SORTED, "setup.cfg": "[isort]\n"})
    settle(project)  # old enough for the stage to be stored

    def found() -> list[tuple[str, int]]:
        result = run_cli("check", "--format", "json", "--select", "MPA109", ".", cwd=project)
        return [(f["rule"], f["line"]) for f in json.loads(result.stdout)["findings"]]

    assert found() == []
    assert list((tmp_path / "cache").rglob("stage-*"))  # what a warm run would replay
    (project / "setup.cfg").write_text("[isort]\nfloat_to_top = true\n")
    assert found() == [("MPA109", 2)]
