from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from patchaudit.static._discover import DiscoveryError, SourceFile, discover


def touch(root: Path, *relpaths: str) -> None:
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")


def run(
    root: Path, *paths: str, exclude: tuple[str, ...] = (), **kwargs: bool
) -> tuple[list[SourceFile], list[str]]:
    return discover(
        [Path(p) for p in paths or ["."]], exclude=exclude, root=root, cwd=root, **kwargs
    )


def rels(root: Path, *paths: str, **kwargs: object) -> list[str]:
    files, problems = run(root, *paths, **kwargs)  # type: ignore[arg-type]
    assert problems == []
    return [f.relpath for f in files]


def modules(root: Path) -> dict[str, str | None]:
    files, _ = run(root)
    return {f.relpath: f.module for f in files}


def test_walks_folders_and_skips_noise(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "a.py",
        "notes.txt",
        "stub.pyi",
        "pkg/__init__.py",
        "pkg/mod.py",
        "pkg/__pycache__/mod.cpython-311.py",
        ".git/hooks/x.py",
        ".tox/py/x.py",
        "node_modules/x.py",
        "build/lib/x.py",
        "dist/x.py",
        ".venv/lib/x.py",
        "env/lib/x.py",
        "env/pyvenv.cfg",  # a virtualenv under an unusual name
        "lib/site-packages/thirdparty.py",  # kept: site-packages is left to `exclude`
    )
    assert rels(tmp_path) == [
        "a.py",
        "lib/site-packages/thirdparty.py",
        "pkg/__init__.py",
        "pkg/mod.py",
    ]


def test_result_fields(tmp_path: Path) -> None:
    touch(tmp_path, "pkg/__init__.py", "pkg/mod.py")
    files, problems = run(tmp_path)
    assert problems == []
    assert files == [
        SourceFile(tmp_path / "pkg/__init__.py", "pkg/__init__.py", "pkg", True),
        SourceFile(tmp_path / "pkg/mod.py", "pkg/mod.py", "pkg.mod", False),
    ]
    assert all(f.path.is_absolute() for f in files)


def test_relpath_is_relative_to_cwd_not_root(tmp_path: Path) -> None:
    touch(tmp_path, "proj/app/mod.py")
    files, _ = discover([Path("proj/app")], exclude=(), root=tmp_path / "proj", cwd=tmp_path)
    assert [(f.relpath, f.module) for f in files] == [("proj/app/mod.py", "app.mod")]


def test_nested_gitignore(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "keep.py",
        "gen_pb2.py",
        "generated/a.py",
        "pkg/local_settings.py",
        "pkg/local_keep.py",
        "pkg/sub/secret.py",
        "pkg/sub/other.py",
        "pkg/sub/deeper/secret.py",
        "other/secret.py",
    )
    (tmp_path / ".gitignore").write_text("*_pb2.py\n/generated/\n# comment\n\nlocal_*.py\n")
    # Patterns in a nested file are relative to its folder; "!" re-includes.
    (tmp_path / "pkg" / ".gitignore").write_text("!local_keep.py\n")
    (tmp_path / "pkg" / "sub" / ".gitignore").write_text("secret.py\n")
    assert rels(tmp_path) == [
        "keep.py",
        "other/secret.py",
        "pkg/local_keep.py",
        "pkg/sub/other.py",
    ]
    assert rels(tmp_path, respect_gitignore=False) == [
        "gen_pb2.py",
        "generated/a.py",
        "keep.py",
        "other/secret.py",
        "pkg/local_keep.py",
        "pkg/local_settings.py",
        "pkg/sub/deeper/secret.py",
        "pkg/sub/other.py",
        "pkg/sub/secret.py",
    ]


def test_gitignore_above_the_walked_folder_applies(tmp_path: Path) -> None:
    touch(tmp_path, "src/app/mod.py", "src/app/mod_pb2.py")
    (tmp_path / ".gitignore").write_text("*_pb2.py\n")
    assert rels(tmp_path, "src/app") == ["src/app/mod.py"]


def test_exclude_patterns(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "app/mod.py",
        "app/migrations/0001.py",
        "tests/test_a.py",
        "docs/conf.py",
        "lib/vendored/six.py",
        "lib/own.py",
    )
    assert rels(tmp_path, exclude=("tests", "migrations/", "/docs", "lib/vendored/**")) == [
        "app/mod.py",
        "lib/own.py",
    ]
    # A pattern with a slash is anchored at root, like in .gitignore.
    assert "lib/vendored/six.py" in rels(tmp_path, exclude=("vendored/**",))
    # Negation works like in .gitignore.
    assert rels(tmp_path, exclude=("*.py", "!own.py")) == ["lib/own.py"]


def test_exclude_is_relative_to_root_not_cwd(tmp_path: Path) -> None:
    touch(tmp_path, "proj/tests/t.py", "proj/app/tests/t.py")
    files, _ = discover([Path("proj")], exclude=("/tests",), root=tmp_path / "proj", cwd=tmp_path)
    assert [f.relpath for f in files] == ["proj/app/tests/t.py"]


def test_explicit_files(tmp_path: Path) -> None:
    touch(tmp_path, "tests/test_a.py", "a.py", "scripts/tool", "ignored.py")
    (tmp_path / ".gitignore").write_text("ignored.py\n")
    files, problems = run(
        tmp_path,
        "a.py",
        "./a.py",
        "scripts/tool",
        "tests/test_a.py",
        "ignored.py",
        exclude=("tests/",),
    )
    assert problems == []
    # Named files skip .gitignore but not `exclude`; any extension goes (pre-commit passes
    # extensionless scripts); duplicates collapse.
    assert [(f.relpath, f.module) for f in files] == [
        ("a.py", "a"),
        ("ignored.py", "ignored"),
        ("scripts/tool", None),
    ]


def test_explicit_folder_inside_excluded_folder_is_excluded(tmp_path: Path) -> None:
    touch(tmp_path, "fixtures/case/a.py")
    assert rels(tmp_path, "fixtures/case", exclude=("fixtures",)) == []


def test_overlapping_paths_are_deduplicated(tmp_path: Path) -> None:
    touch(tmp_path, "src/pkg/__init__.py", "src/pkg/a.py", "b.py")
    expected = ["b.py", "src/pkg/__init__.py", "src/pkg/a.py"]
    assert rels(tmp_path, ".", "src", "src/pkg/a.py") == expected
    assert rels(tmp_path, "src/pkg/a.py", "src", ".") == expected


def test_deterministic_component_wise_order(tmp_path: Path) -> None:
    names = ["b.py", "a-b.py", "a/b.py", "a/a.py", "a.py", "A.py", "a_b.py", "a/c/z.py"]
    touch(tmp_path, *names)
    first = rels(tmp_path)
    assert first == ["A.py", "a/a.py", "a/b.py", "a/c/z.py", "a-b.py", "a.py", "a_b.py", "b.py"]
    assert rels(tmp_path, "b.py", "a", ".") == first


def test_missing_path_raises(tmp_path: Path) -> None:
    touch(tmp_path, "a.py")
    with pytest.raises(DiscoveryError, match=r"^path does not exist: nope$"):
        discover([Path("a.py"), Path("nope/")], exclude=(), root=tmp_path, cwd=tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="POSIX links")
def test_symlink_loop_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    touch(tmp_path, "pkg/__init__.py", "pkg/sub/mod.py")
    os.symlink("..", tmp_path / "pkg" / "sub" / "loop")
    os.symlink("self", tmp_path / "pkg" / "self")  # a link to itself: not even a folder
    files, problems = run(tmp_path)
    assert [f.relpath for f in files] == ["pkg/__init__.py", "pkg/sub/mod.py"]
    assert problems == ["skipped pkg/sub/loop/: symlink loop"]


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="POSIX links")
def test_symlinked_folders(tmp_path: Path) -> None:
    touch(tmp_path, "proj/zpkg/mod.py", "outside/ext.py")
    # A link sorting before the real folder must not steal its files; a link to a folder
    # outside the tree (the project root) is never followed.
    os.symlink(tmp_path / "proj" / "zpkg", tmp_path / "proj" / "alias")
    os.symlink(tmp_path / "outside", tmp_path / "proj" / "linked")
    os.symlink(tmp_path / "outside", tmp_path / "proj" / "linked_again")
    os.symlink(tmp_path / "missing.py", tmp_path / "proj" / "dangling.py")
    files, problems = discover([Path("proj")], exclude=(), root=tmp_path / "proj", cwd=tmp_path)
    assert [f.relpath for f in files] == ["proj/zpkg/mod.py"]
    assert problems == [
        "skipped proj/dangling.py: broken symlink",
        "skipped proj/linked/: symlink to outside the project root, not followed",
        "skipped proj/linked_again/: symlink to outside the project root, not followed",
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_folder_is_a_problem(tmp_path: Path) -> None:
    touch(tmp_path, "ok.py", "locked/hidden.py")
    locked = tmp_path / "locked"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that ignore permissions (root)")
        files, problems = run(tmp_path)
        assert [f.relpath for f in files] == ["ok.py"]
        assert problems == ["skipped locked/: permission denied"]
    finally:
        locked.chmod(0o755)


def test_module_names_flat_layout(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "app/__init__.py",
        "app/__main__.py",
        "app/core/__init__.py",
        "app/core/wsgi.py",
        "manage.py",
        "my-script.py",
        "class.py",  # a keyword can't be imported
        "bad-pkg/__init__.py",
        "bad-pkg/mod.py",
    )
    assert modules(tmp_path) == {
        "app/__init__.py": "app",
        "app/__main__.py": "app.__main__",
        "app/core/__init__.py": "app.core",
        "app/core/wsgi.py": "app.core.wsgi",
        "bad-pkg/__init__.py": None,
        "bad-pkg/mod.py": None,
        "class.py": None,
        "manage.py": "manage",
        "my-script.py": None,
    }


def test_module_names_src_layout(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "src/pkg/__init__.py",
        "src/pkg/mod.py",
        "src/top.py",
        "tests/test_mod.py",
        "tests/unit/__init__.py",
        "tests/unit/test_x.py",
    )
    assert modules(tmp_path) == {
        "src/pkg/__init__.py": "pkg",
        "src/pkg/mod.py": "pkg.mod",
        "src/top.py": "top",
        "tests/test_mod.py": "tests.test_mod",
        "tests/unit/__init__.py": "tests.unit",
        "tests/unit/test_x.py": "tests.unit.test_x",
    }


def test_module_names_namespace_packages(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "ns/sub/mod.py",
        "company/product/__init__.py",  # a regular package inside a namespace package
        "company/product/api.py",
        "src/acme/plugins/__init__.py",
        "src/acme/plugins/x.py",
        "my-tools/run.py",  # not a namespace: run as `python my-tools/run.py`
        "my-tools/helpers/__init__.py",
    )
    assert modules(tmp_path) == {
        "company/product/__init__.py": "company.product",
        "company/product/api.py": "company.product.api",
        "my-tools/helpers/__init__.py": "helpers",
        "my-tools/run.py": "run",
        "ns/sub/mod.py": "ns.sub.mod",
        "src/acme/plugins/__init__.py": "acme.plugins",
        "src/acme/plugins/x.py": "acme.plugins.x",
    }


def test_paths_outside_root_are_skipped_with_a_problem(tmp_path: Path) -> None:
    touch(tmp_path, "other/pkg/__init__.py", "other/pkg/m.py", "proj/a.py")
    root = tmp_path / "proj"
    files, problems = discover([Path("other/pkg/m.py")], exclude=(), root=root, cwd=tmp_path)
    assert files == []
    assert problems == [f"skipped other/pkg/m.py: outside the project root {root}"]


def test_many_files_is_fast_enough(tmp_path: Path) -> None:
    import time

    for d in range(50):
        touch(tmp_path, f"app/m{d}/__init__.py", *(f"app/m{d}/f{i}.py" for i in range(40)))
    (tmp_path / ".gitignore").write_text("*.pyc\nbuild/\n*_pb2.py\n")
    start = time.perf_counter()
    files, _ = run(tmp_path, exclude=("tests", "docs/"))
    elapsed = time.perf_counter() - start
    assert len(files) == 2050
    assert elapsed < 1.0  # generous for CI; ~20 ms on a slow dev box


def test_unreadable_folder_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Same as above but also runs as root: scandir fails the way a chmod 000 folder makes it.
    touch(tmp_path, "ok.py", "locked/hidden.py")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, problems = run(tmp_path)
    assert [f.relpath for f in files] == ["ok.py"]
    assert problems == ["skipped locked/: permission denied"]


def test_nested_project_names_modules_from_its_own_root(tmp_path: Path) -> None:
    # A monorepo: services/shop has its own pyproject.toml, so shop/wsgi.py is `shop.wsgi`.
    (tmp_path / "services" / "shop" / "shop").mkdir(parents=True)
    (tmp_path / "services" / "shop" / "pyproject.toml").write_text("[project]\nname='shop'\n")
    (tmp_path / "services" / "shop" / "shop" / "__init__.py").write_text("")
    (tmp_path / "services" / "shop" / "shop" / "wsgi.py").write_text("")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "run.py").write_text("")
    files, problems = discover([tmp_path], exclude=[], root=tmp_path, cwd=tmp_path)
    assert problems == []
    assert {f.relpath: f.module for f in files} == {
        "services/shop/shop/__init__.py": "shop",
        "services/shop/shop/wsgi.py": "shop.wsgi",
        "tools/run.py": "tools.run",
    }
