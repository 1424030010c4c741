from __future__ import annotations

from pathlib import Path

import pytest

from patchaudit._config import Config, ConfigError, load_config
from patchaudit._findings import Severity

KNOWN = {"MPA101", "MPA102", "MPA201", "MPA202", "MPA301"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(project: Path, body: str, **kwargs: object) -> Config:
    write(project / "pyproject.toml", "[tool.patchaudit]\n" + body)
    return load_config([project], KNOWN, **kwargs)  # type: ignore[arg-type]


def error_of(project: Path, body: str, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(project, body, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_without_any_pyproject(project: Path) -> None:
    config = load_config([project], KNOWN)
    assert config.root == project
    assert config.source is None
    assert config.select == frozenset(KNOWN)
    assert config.per_file_ignores == ()
    assert config.exclude == ()
    assert config.fail_on is Severity.WARNING
    assert config.entry_points == ()
    assert config.framework == "auto"


def test_nearest_pyproject_with_table_wins(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.patchaudit]\nselect = ["MPA1"]\n')
    # A nearer pyproject.toml without [tool.patchaudit] is skipped, like ruff does.
    write(project / "sub" / "pyproject.toml", '[project]\nname = "x"\n')
    (project / "sub" / "pkg").mkdir()
    config = load_config([project / "sub" / "pkg" / "mod.py"], KNOWN)
    assert config.source == project / "pyproject.toml"
    assert config.root == project
    assert config.select == {"MPA101", "MPA102"}


def test_relative_first_path_is_resolved_against_cwd(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.patchaudit]\nselect = ["MPA3"]\n')
    (project / "src").mkdir()
    assert load_config([Path("src")], KNOWN).select == {"MPA301"}


def test_explicit_config_file(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.patchaudit]\nselect = ["MPA3"]\n')
    other = write(project / "conf" / "patchaudit.toml", 'select = ["MPA2"]\n')
    config = load_config([project], KNOWN, config_file=other)
    assert config.source == other
    assert config.root == project / "conf"
    assert config.select == {"MPA201", "MPA202"}


def test_explicit_config_file_missing(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config file not found: nope\.toml$"):
        load_config([project], KNOWN, config_file=Path("nope.toml"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('select = ["ALL"]\n', KNOWN),
        ('select = ["MPA"]\n', KNOWN),
        ('select = ["MPA1"]\n', {"MPA101", "MPA102"}),
        ('select = ["MPA101", "MPA3"]\n', {"MPA101", "MPA301"}),
        ('select = ["mpa20"]\n', {"MPA201", "MPA202"}),
        ("select = []\n", set()),
        ('ignore = ["MPA1"]\n', {"MPA201", "MPA202", "MPA301"}),
        ('select = ["MPA1"]\nextend-select = ["MPA301"]\n', {"MPA101", "MPA102", "MPA301"}),
        # select, then extend-select, then ignore: ignore has the last word.
        (
            'select = ["MPA1"]\nextend-select = ["MPA2"]\nignore = ["MPA202", "MPA102"]\n',
            {"MPA101", "MPA201"},
        ),
    ],
)
def test_rule_selection(project: Path, body: str, expected: set[str]) -> None:
    assert load(project, body).select == expected


def test_per_file_ignores(project: Path) -> None:
    config = load(
        project,
        '[tool.patchaudit.per-file-ignores]\n"tests/*" = ["MPA2"]\n"__init__.py" = ["MPA101"]\n'
        '"!src/**" = ["MPA301"]\n',
    )
    assert config.per_file_ignores == (
        ("tests/*", frozenset({"MPA201", "MPA202"})),
        ("__init__.py", frozenset({"MPA101"})),
        ("!src/**", frozenset({"MPA301"})),
    )
    assert config.codes_for("src/app/mod.py") == KNOWN
    assert config.codes_for("tests/test_x.py") == {"MPA101", "MPA102"}
    assert config.codes_for("tests/deep/test_y.py") == {"MPA101", "MPA102"}
    assert config.codes_for("./tests/test_x.py") == {"MPA101", "MPA102"}
    assert config.codes_for("src/app/__init__.py") == KNOWN - {"MPA101"}
    assert config.codes_for("tests/__init__.py") == {"MPA102"}
    assert config.codes_for("other/tests/x.py") == KNOWN - {"MPA301"}  # "tests/*" is anchored


def test_exclude_entry_points_framework_fail_on(project: Path) -> None:
    config = load(
        project,
        'exclude = ["fixtures", "*_pb2.py"]\nextend-exclude = ["gen/"]\n'
        'entry-points = ["app.wsgi", "scripts/*.py"]\nframework = "gevent"\nfail-on = "error"\n'
        "respect-gitignore = false\n",
    )
    assert config.exclude == ("fixtures", "*_pb2.py", "gen/")
    assert config.entry_points == ("app.wsgi", "scripts/*.py")
    assert config.framework == "gevent"
    assert config.fail_on is Severity.ERROR
    assert config.respect_gitignore is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("error", Severity.ERROR),
        ("warning", Severity.WARNING),
        ("info", Severity.INFO),
        ("never", None),
        ("Error", Severity.ERROR),
    ],
)
def test_fail_on_values(project: Path, value: str, expected: Severity | None) -> None:
    assert load(project, f'fail-on = "{value}"\n').fail_on is expected


def test_unknown_key_suggests_the_right_one(project: Path) -> None:
    assert error_of(project, 'selectt = ["MPA1"]\n') == (
        "pyproject.toml: [tool.patchaudit] unknown key 'selectt' (did you mean 'select'?)"
    )
    assert error_of(project, "per_file_ignores = {}\n") == (
        "pyproject.toml: [tool.patchaudit] unknown key 'per_file_ignores' "
        "(did you mean 'per-file-ignores'?)"
    )


def test_unknown_key_without_close_match_lists_keys(project: Path) -> None:
    message = error_of(project, "zzz = 1\n")
    assert message.startswith("pyproject.toml: [tool.patchaudit] unknown key 'zzz'; valid keys: ")
    assert "extend-select" in message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("select = 3\n", "'select' must be a list of strings, got int"),
        ('select = "MPA1"\n', "'select' must be a list of strings, got str"),
        ("exclude = [1]\n", "'exclude' must be a list of strings, got a list containing int 1"),
        ('entry-points = [""]\n', "'entry-points' contains an empty string; remove it"),
        (
            "per-file-ignores = []\n",
            "'per-file-ignores' must be a table of glob = [codes], got list",
        ),
        (
            'per-file-ignores = {"tests/*" = "MPA1"}\n',
            "'per-file-ignores.\"tests/*\"' must be a list of strings, got str",
        ),
        (
            'fail-on = "fatal"\n',
            "'fail-on' must be one of 'error', 'warning', 'info', 'never', got 'fatal'",
        ),
        ("fail-on = 2\n", "'fail-on' must be one of 'error', 'warning', 'info', 'never', got int"),
        (
            'framework = "asyncio"\n',
            "'framework' must be one of 'auto', 'gevent', 'eventlet', got 'asyncio'",
        ),
        ('respect-gitignore = "yes"\n', "'respect-gitignore' must be true or false, got str"),
    ],
)
def test_bad_types(project: Path, body: str, message: str) -> None:
    assert error_of(project, body) == f"pyproject.toml: [tool.patchaudit] {message}"


def test_unknown_code(project: Path) -> None:
    assert error_of(project, 'select = ["MPA999"]\n') == (
        "pyproject.toml: [tool.patchaudit] unknown rule code or prefix 'MPA999' in 'select'"
    )
    assert error_of(project, 'ignore = ["MPA1O1"]\n') == (
        "pyproject.toml: [tool.patchaudit] unknown rule code or prefix 'MPA1O1' in 'ignore' "
        "(did you mean 'MPA101'?)"
    )
    assert "in 'per-file-ignores'" in error_of(project, 'per-file-ignores = {"x" = ["MPA4"]}\n')
    # A prefix is valid only when it matches a known code.
    assert "'MPA4'" in error_of(project, 'extend-select = ["MPA4"]\n')


def test_explicit_select_with_no_known_codes_is_an_error(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.patchaudit]\nselect = ["MPA1"]\n')
    with pytest.raises(ConfigError, match="unknown rule code or prefix 'MPA1'"):
        load_config([project], set())
    write(project / "pyproject.toml", "[tool.patchaudit]\n")
    assert load_config([project], set()).select == frozenset()


def test_broken_toml_names_file_and_line(project: Path) -> None:
    assert error_of(project, 'select = ["MPA1"]\nexclude = [1,,]\n') == (
        "pyproject.toml:3:14: invalid TOML: Invalid value"
    )


def test_broken_toml_at_end_of_document_points_at_last_line(project: Path) -> None:
    message = error_of(project, 'select = ["MPA1"]\nexclude = [\n')
    assert message.startswith("pyproject.toml:3: invalid TOML: ")


def test_broken_toml_in_subfolder_is_shown_relative_to_cwd(project: Path) -> None:
    write(project / "app" / "pyproject.toml", "[tool.patchaudit]\nselect = = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config([project / "app"], KNOWN)
    assert str(info.value).startswith("app/pyproject.toml:2:")


def test_table_must_be_a_table(project: Path) -> None:
    write(project / "pyproject.toml", 'tool.patchaudit = "all"\n')
    with pytest.raises(ConfigError, match=r"\[tool.patchaudit\] must be a table, got str$"):
        load_config([project], KNOWN)


def test_overrides_take_precedence(project: Path) -> None:
    body = (
        'select = ["MPA1", "MPA2"]\nignore = ["MPA102"]\nexclude = ["a"]\nextend-exclude = ["b"]\n'
        'fail-on = "info"\nframework = "eventlet"\nentry-points = ["x.main"]\n'
        'per-file-ignores = {"tests/*" = ["MPA2"]}\n'
    )
    base = load(project, body)
    assert base.select == {"MPA101", "MPA201", "MPA202"}

    # Without an override select, command-line extend-select/ignore layer on the file's result.
    layered = load(project, body, overrides={"extend-select": ["MPA301"], "ignore": ["MPA201"]})
    assert layered.select == {"MPA101", "MPA202", "MPA301"}

    # An override select starts from scratch, like ruff's --select.
    replaced = load(
        project,
        body,
        overrides={
            "select": ["MPA102"],
            "exclude": ["c"],
            "extend-exclude": ["d"],
            "fail-on": "never",
            "framework": "gevent",
            "entry-points": ["y.main"],
            "per-file-ignores": {"docs/*": ["MPA1"]},
        },
    )
    assert replaced.select == {"MPA102"}
    assert replaced.exclude == ("c", "b", "d")
    assert replaced.fail_on is None
    assert replaced.framework == "gevent"
    assert replaced.entry_points == ("y.main",)
    assert [glob for glob, _ in replaced.per_file_ignores] == ["tests/*", "docs/*"]
    assert replaced.codes_for("docs/conf.py") == frozenset()


def test_overrides_are_lenient_about_spelling_and_none(project: Path) -> None:
    config = load(
        project,
        "",
        overrides={"extend_select": "MPA1, MPA3", "ignore": ("MPA3",), "select": None},
    )
    assert config.select == KNOWN - {"MPA301"}


def test_bad_override_is_reported_as_command_line(project: Path) -> None:
    assert error_of(project, "", overrides={"select": ["NOPE1"]}) == (
        "command line: unknown rule code or prefix 'NOPE1' in 'select'"
    )
    assert error_of(project, "", overrides={"fail-on": "sometimes"}).startswith(
        "command line: 'fail-on' must be one of"
    )


def test_fingerprint(project: Path) -> None:
    first = load(project, 'select = ["MPA1"]\n').fingerprint()
    assert load(project, 'select = ["MPA1"]\n').fingerprint() == first
    assert load(project, 'select = ["MPA101", "MPA102"]\n').fingerprint() == first  # same set
    assert load(project, 'select = ["MPA2"]\n').fingerprint() != first
    assert load(project, 'select = ["MPA1"]\nexclude = ["x"]\n').fingerprint() != first
    assert load(project, 'select = ["MPA1"]\nframework = "gevent"\n').fingerprint() != first
    assert len(first) == 64
