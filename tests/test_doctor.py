"""`patchaudit doctor`: real /proc of this machine, every status branch on a fake /proc tree,
resource limits in a child process, JSON schema, colour handling."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from patchaudit.doctor import (
    CHECKS,
    DEFAULT_BACKLOG,
    FD_MARGIN,
    STATUSES,
    CheckResult,
    exit_code,
    render_json,
    render_table,
    run_checks,
)

from ._terminal import run_on_a_terminal

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[")
LINUX = sys.platform.startswith("linux")
CHECK_KEYS = {"id", "title", "status", "value", "needed", "why", "fix", "readings"}

#: A healthy modern kernel (the defaults of Linux >= 5.4), with conntrack not loaded.
BASELINE = {
    "kernel.osrelease": "6.8.0-test",
    "net.ipv4.ip_local_port_range": "32768\t60999",
    "net.ipv4.ip_local_reserved_ports": "",
    "net.ipv4.tcp_tw_reuse": "2",
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_syncookies": "1",
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_max_syn_backlog": "2048",
    "fs.file-max": "9223372036854775807",
    "fs.nr_open": "1048576",
}


def fake_proc(tmp_path: Path, **overrides: str | None) -> Path:
    """A /proc tree with BASELINE's settings; keyword names use `__` for dots, None removes."""
    settings = dict(BASELINE)
    for name, value in overrides.items():
        key = name.replace("__", ".")
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    root = tmp_path / "proc"
    (root / "sys").mkdir(parents=True, exist_ok=True)
    for key, value in settings.items():
        path = root / "sys" / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return root


def by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.id: r for r in results}


def check(tmp_path: Path, check_id: str, concurrency: int = 1000, **kwargs) -> CheckResult:
    options = {k: kwargs.pop(k) for k in ("rate", "same_process", "backlog") if k in kwargs}
    backlog = options.pop("backlog", DEFAULT_BACKLOG)
    results = run_checks(concurrency, backlog, fake_proc(tmp_path, **kwargs), **options)
    return by_id(results)[check_id]


def run_cli(*args: str, limits: tuple[int, int] | None = None, env: dict[str, str] | None = None):
    def lower() -> None:
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    return subprocess.run(
        [sys.executable, "-m", "patchaudit.doctor", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        preexec_fn=lower,
        timeout=60,
    )


# --- the real machine -------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="reads the real /proc")
def test_real_proc_values_match_cat() -> None:
    results = run_checks(1000, DEFAULT_BACKLOG)
    compared = 0
    for result in results:
        assert result.status in STATUSES
        assert "does not exist" not in result.value or result.status in ("N/A", "INFO")
        for key, reading in result.readings.items():
            if key.startswith("RLIMIT_"):
                continue
            path = Path("/proc/sys") / key.replace(".", "/")
            cat = subprocess.run(["cat", str(path)], capture_output=True, text=True, check=True)
            assert reading == " ".join(cat.stdout.split()), key
            compared += 1
    assert compared >= 6
    found = by_id(results)
    for key in ("net.core.somaxconn", "net.ipv4.tcp_syncookies", "net.ipv4.tcp_tw_reuse"):
        assert found[key].status != "N/A", found[key]
        assert found[key].readings[key] == Path("/proc/sys", *key.split(".")).read_text().strip()
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert found["net.ipv4.ip_local_port_range"].value.startswith(f"{low}-{high}: ")


def test_real_rlimit_matches_ulimit() -> None:
    reading = by_id(run_checks(10, DEFAULT_BACKLOG))["RLIMIT_NOFILE"].readings
    shell = subprocess.run(
        ["sh", "-c", "ulimit -Sn; ulimit -Hn"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert [reading["RLIMIT_NOFILE.soft"], reading["RLIMIT_NOFILE.hard"]] == shell


@pytest.mark.skipif(not LINUX, reason="reads the real /proc")
def test_real_tw_recycle_matches_kernel() -> None:
    result = by_id(run_checks(10, DEFAULT_BACKLOG))["net.ipv4.tcp_tw_recycle"]
    if Path("/proc/sys/net/ipv4/tcp_tw_recycle").exists():
        assert result.status in ("OK", "WARN")
    else:
        assert result.status == "INFO"
        assert "removed in Linux 4.12" in result.value
        assert os.uname().release in result.value


def test_registry_is_a_catalogue() -> None:
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids)) == 8
    for entry in CHECKS:
        assert entry.title and entry.why.count(".") >= 1
    assert "post" in " ".join(c.why for c in CHECKS)


# --- every branch on a fake /proc --------------------------------------------------------------


def test_baseline_is_clean(tmp_path: Path) -> None:
    results = run_checks(1000, 1024, fake_proc(tmp_path))
    statuses = {r.id: r.status for r in results}
    assert statuses == {
        "RLIMIT_NOFILE": statuses["RLIMIT_NOFILE"],  # the real limit of this process
        "net.ipv4.ip_local_port_range": "INFO",
        "net.ipv4.tcp_tw_reuse": "OK",
        "net.ipv4.tcp_tw_recycle": "INFO",
        "net.ipv4.tcp_syncookies": "OK",
        "net.core.somaxconn": "OK",
        "net.ipv4.tcp_max_syn_backlog": "INFO",
        "net.netfilter.nf_conntrack_max": "N/A",
    }


def test_port_range_figures(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.ip_local_port_range")
    assert result.status == "INFO"
    assert "32768-60999: 28,232 ports / 60 s = 471 new connections/s" in result.value
    assert "28,232/s to loopback addresses with tcp_tw_reuse=2" in result.value
    assert "--rate" in result.needed
    assert result.fix == 'sudo sysctl -w net.ipv4.ip_local_port_range="1024 65535"'


def test_port_range_rate_ok(tmp_path: Path) -> None:
    assert check(tmp_path, "net.ipv4.ip_local_port_range", rate=400).status == "OK"


def test_port_range_rate_needs_reuse(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.ip_local_port_range", rate=5000)
    assert result.status == "OK"
    assert "enough only thanks to tcp_tw_reuse (127.0.0.0/8 and ::1 only)" in result.value


def test_port_range_rate_warn_without_reuse(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.ip_local_port_range", rate=1000, net__ipv4__tcp_tw_reuse="0")
    assert result.status == "WARN"
    assert "1,000/s needs 60,000 ports" in result.value
    assert "ip_local_port_range" in result.fix


def test_port_range_reuse_delay_and_reserved(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        "net.ipv4.ip_local_port_range",
        net__ipv4__ip_local_port_range="40000 40999",
        net__ipv4__ip_local_reserved_ports="40000-40099,40500,50000",
        net__ipv4__tcp_tw_reuse_delay="500",
    )
    assert "899 ports (101 reserved) / 60 s = 15 new connections/s" in result.value
    assert "1,798/s to loopback" in result.value


def test_port_range_too_few_for_concurrency(tmp_path: Path) -> None:
    result = check(
        tmp_path, "net.ipv4.ip_local_port_range", 2000, net__ipv4__ip_local_port_range="40000 40999"
    )
    assert result.status == "WARN"
    assert "too few ports for 2,000 connections" in result.value


@pytest.mark.parametrize(
    ("reuse", "timestamps", "status", "fix"),
    [
        ("0", "1", "WARN", "sudo sysctl -w net.ipv4.tcp_tw_reuse=2"),
        ("1", "1", "OK", None),
        ("2", "1", "OK", "tcp_tw_reuse=1   # only if the bench targets a non-loopback address"),
        ("2", "0", "WARN", "sudo sysctl -w net.ipv4.tcp_timestamps=1"),
    ],
)
def test_tw_reuse(tmp_path: Path, reuse: str, timestamps: str, status: str, fix) -> None:
    result = check(
        tmp_path,
        "net.ipv4.tcp_tw_reuse",
        net__ipv4__tcp_tw_reuse=reuse,
        net__ipv4__tcp_timestamps=timestamps,
    )
    assert result.status == status
    if fix is None:
        assert result.fix is None
    else:
        assert fix in result.fix


def test_tw_recycle_removed(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.tcp_tw_recycle")
    assert result.status == "INFO"
    assert result.value == "absent: removed in Linux 4.12, this kernel is 6.8.0-test"


def test_tw_recycle_enabled_on_old_kernel(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        "net.ipv4.tcp_tw_recycle",
        kernel__osrelease="4.4.0-old",
        net__ipv4__tcp_tw_recycle="1",
    )
    assert result.status == "WARN"
    assert result.fix == "sudo sysctl -w net.ipv4.tcp_tw_recycle=0"


def test_tw_recycle_off_on_old_kernel(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        "net.ipv4.tcp_tw_recycle",
        kernel__osrelease="4.4.0-old",
        net__ipv4__tcp_tw_recycle="0",
    )
    assert result.status == "OK"


def test_tw_recycle_missing_on_old_kernel_is_not_applicable(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.tcp_tw_recycle", kernel__osrelease="3.10.0-old")
    assert result.status == "N/A"
    assert "does not exist" in result.value and "3.10.0-old" in result.value


@pytest.mark.parametrize(("value", "status"), [("0", "WARN"), ("1", "OK"), ("2", "INFO")])
def test_syncookies(tmp_path: Path, value: str, status: str) -> None:
    result = check(tmp_path, "net.ipv4.tcp_syncookies", net__ipv4__tcp_syncookies=value)
    assert result.status == status
    if status == "WARN":
        assert result.fix == "sudo sysctl -w net.ipv4.tcp_syncookies=1"


def test_somaxconn_caps_backlog(tmp_path: Path) -> None:
    result = check(tmp_path, "net.core.somaxconn", 100, backlog=1024, net__core__somaxconn="128")
    assert result.status == "WARN"
    assert "the server's backlog 1024 is cut to 128" in result.value
    assert result.fix == "sudo sysctl -w net.core.somaxconn=1024"


def test_somaxconn_below_concurrency(tmp_path: Path) -> None:
    result = check(tmp_path, "net.core.somaxconn", 10000, backlog=10000)
    assert result.status == "WARN"
    assert "the server's backlog 10000 is cut to 4096" in result.value
    assert result.fix == "sudo sysctl -w net.core.somaxconn=10000"


def test_somaxconn_server_backlog_below_burst(tmp_path: Path) -> None:
    result = check(tmp_path, "net.core.somaxconn", 1000)  # default backlog 128
    assert result.status == "INFO"
    assert "a burst of 1,000 connects can overflow the server's 128" in result.value
    assert result.fix.startswith("# start the server with a backlog of 1000")
    assert "patchaudit doctor --backlog 1000" in result.fix
    both = check(tmp_path, "net.core.somaxconn", 10000, backlog=1024)
    assert both.status == "WARN"
    assert both.fix.splitlines()[0] == "sudo sysctl -w net.core.somaxconn=10000"
    assert "even a backlog of 10000 would be cut to 4096" in both.value


def test_somaxconn_ok_and_retry_schedule(tmp_path: Path) -> None:
    result = check(tmp_path, "net.core.somaxconn", 500, backlog=1024)
    assert result.status == "OK"
    assert result.fix is None
    assert "accept queue = min(backlog 1024, 4096) = 1024" in result.value
    assert "resent after 1 s, 3 s, 7 s" in result.value
    linear = check(tmp_path, "net.core.somaxconn", 100, net__ipv4__tcp_syn_linear_timeouts="4")
    assert linear.status == "OK"
    assert "resent after 1 s, 2 s, 3 s" in linear.value


def test_max_syn_backlog_ignored_with_cookies(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.tcp_max_syn_backlog")
    assert result.status == "INFO"
    assert "not consulted while tcp_syncookies=1" in result.value


@pytest.mark.parametrize(("limit", "status"), [("512", "WARN"), ("4096", "OK")])
def test_max_syn_backlog_without_cookies(tmp_path: Path, limit: str, status: str) -> None:
    result = check(
        tmp_path,
        "net.ipv4.tcp_max_syn_backlog",
        net__ipv4__tcp_syncookies="0",
        net__ipv4__tcp_max_syn_backlog=limit,
    )
    assert result.status == status
    if status == "WARN":
        assert result.fix == "sudo sysctl -w net.ipv4.tcp_max_syn_backlog=1334"


def test_conntrack_not_loaded(tmp_path: Path) -> None:
    result = check(tmp_path, "net.netfilter.nf_conntrack_max")
    assert result.status == "N/A"
    assert result.value.startswith("conntrack not loaded")


def test_conntrack_full(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        "net.netfilter.nf_conntrack_max",
        net__netfilter__nf_conntrack_max="1000",
        net__netfilter__nf_conntrack_count="500",
    )
    assert result.status == "WARN"
    assert result.needed == "≥ 1,500 (500 in use + 1,000 connections)"
    assert result.fix == "sudo sysctl -w net.netfilter.nf_conntrack_max=1500"


def test_conntrack_counts_closed_connections_at_rate(tmp_path: Path) -> None:
    settings = {
        "net__netfilter__nf_conntrack_max": "65536",
        "net__netfilter__nf_conntrack_count": "10",
        "net__netfilter__nf_conntrack_tcp_timeout_time_wait": "120",
    }
    assert check(tmp_path, "net.netfilter.nf_conntrack_max", **settings).status == "OK"
    result = check(tmp_path, "net.netfilter.nf_conntrack_max", rate=1000, **settings)
    assert result.status == "WARN"
    assert "1,000/s × 120 s closed" in result.needed


# --- unreadable settings ---------------------------------------------------------------------


def test_missing_file_is_not_applicable(tmp_path: Path) -> None:
    result = check(tmp_path, "net.core.somaxconn", net__core__somaxconn=None)
    assert result.status == "N/A"
    assert result.value.endswith("sys/net/core/somaxconn does not exist")


def test_unreadable_file_is_not_applicable(tmp_path: Path) -> None:
    root = fake_proc(tmp_path, net__core__somaxconn=None)
    (root / "sys/net/core/somaxconn").mkdir(parents=True)  # read_text() fails even for root
    result = by_id(run_checks(100, DEFAULT_BACKLOG, root))["net.core.somaxconn"]
    assert result.status == "N/A"
    assert result.value.startswith("cannot read")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_permission_denied_is_not_applicable(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    (root / "sys/net/core/somaxconn").chmod(0)
    result = by_id(run_checks(100, DEFAULT_BACKLOG, root))["net.core.somaxconn"]
    assert result.status == "N/A"
    assert "permission denied" in result.value


def test_garbage_is_not_applicable(tmp_path: Path) -> None:
    result = check(tmp_path, "net.ipv4.ip_local_port_range", net__ipv4__ip_local_port_range="x")
    assert result.status == "N/A"
    assert "unexpected content" in result.value


def test_no_proc_tree(tmp_path: Path) -> None:
    results = run_checks(100, DEFAULT_BACKLOG, tmp_path / "nowhere")
    assert [r.status for r in results if r.id != "RLIMIT_NOFILE"] == ["N/A"] * 7
    assert by_id(results)["RLIMIT_NOFILE"].status in ("OK", "WARN", "FAIL")


def test_exit_code() -> None:
    def result(status: str) -> CheckResult:
        return CheckResult("x", "x", status, "", None, "", None)

    assert exit_code([result("OK"), result("INFO"), result("N/A")]) == 0
    assert exit_code([result("OK"), result("WARN")]) == 1
    assert exit_code([result("FAIL")]) == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        run_checks(0, DEFAULT_BACKLOG)
    with pytest.raises(ValueError):
        run_checks(10, DEFAULT_BACKLOG, rate=0)
    proc = run_cli("--concurrency", "0")
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr


# --- resource limits, in a child with lowered RLIMIT_NOFILE ------------------------------------


def nofile_check(stdout: str) -> dict:
    return next(c for c in json.loads(stdout)["checks"] if c["id"] == "RLIMIT_NOFILE")


def test_low_soft_limit_warns() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1000 + FD_MARGIN:
        pytest.skip("this machine's hard limit is below the test's need")
    proc = run_cli("--format", "json", "-c", "1000", limits=(256, hard))
    assert proc.returncode == 1, proc.stderr
    result = nofile_check(proc.stdout)
    assert result["status"] == "WARN"
    assert result["readings"]["RLIMIT_NOFILE.soft"] == "256"
    assert "patchaudit bench` raises the soft limit itself" in result["value"]
    assert result["fix"].startswith(f"ulimit -n {1000 + FD_MARGIN}")


def test_low_hard_limit_fails() -> None:
    proc = run_cli("--format", "json", "-c", "1000", limits=(256, 512))
    assert proc.returncode == 1
    result = nofile_check(proc.stdout)
    assert result["status"] == "FAIL"
    assert result["readings"]["RLIMIT_NOFILE.hard"] == "512"
    need = 1000 + FD_MARGIN
    assert f"sudo prlimit --pid $$ --nofile={need}:{need}" in result["fix"]
    assert f"* hard nofile {need}" in result["fix"]


def test_same_process_counts_both_ends() -> None:
    limits = (1500, 1500)
    proc = run_cli("--format", "json", "-c", "1000", "--same-process", limits=limits)
    result = nofile_check(proc.stdout)
    assert result["status"] == "FAIL"
    assert result["needed"].startswith(f"≥ {2000 + FD_MARGIN:,} (2 × 1,000 connections + ")
    alone = nofile_check(run_cli("--format", "json", "-c", "1000", limits=limits).stdout)
    assert alone["status"] == "OK"


# --- output ----------------------------------------------------------------------------------


def test_json_schema(tmp_path: Path) -> None:
    proc = run_cli("--format", "json", "-c", "200", "--rate", "50")
    document = json.loads(proc.stdout)
    assert set(document) == {"version", "machine", "concurrency", "backlog", "rate", "checks"}
    assert document["version"] == 1
    assert set(document["machine"]) == {"kernel", "cores", "python"}
    assert isinstance(document["machine"]["cores"], int) and document["machine"]["cores"] >= 1
    assert document["machine"]["kernel"].startswith(os.uname().sysname)
    assert (document["concurrency"], document["backlog"], document["rate"]) == (200, 128, 50.0)
    assert [c["id"] for c in document["checks"]] == [c.id for c in CHECKS]
    for item in document["checks"]:
        assert set(item) == CHECK_KEYS
        assert item["status"] in STATUSES
        for key in ("id", "title", "status", "value", "why"):
            assert isinstance(item[key], str) and item[key]
        assert item["needed"] is None or isinstance(item["needed"], str)
        assert item["fix"] is None or isinstance(item["fix"], str)
        assert all(isinstance(v, str) for v in item["readings"].values())
    statuses = {c["status"] for c in document["checks"]}
    assert proc.returncode == (1 if statuses & {"WARN", "FAIL"} else 0)
    # the pure renderer gives the same document for the same results
    results = run_checks(200, 1024, fake_proc(tmp_path), rate=50)
    again = json.loads(render_json(results, concurrency=200, backlog=1024, rate=50))
    assert [c["id"] for c in again["checks"]] == [c.id for c in CHECKS]


def test_table_lists_every_check(tmp_path: Path) -> None:
    results = run_checks(1000, DEFAULT_BACKLOG, fake_proc(tmp_path, net__core__somaxconn="128"))
    text = render_table(results, concurrency=1000, backlog=1024, rate=None, color=False)
    assert not ANSI.search(text)
    for entry in CHECKS:
        assert entry.id in text
    assert "$ sudo sysctl -w net.core.somaxconn=1000" in text
    assert "doctor changed nothing" in text
    # the commands are never wrapped (they are pasted into a shell); everything else fits
    assert all(len(line) <= 100 for line in text.splitlines() if not line.startswith("  "))
    assert not any(line != line.rstrip() for line in text.splitlines())


def run_in_pty(*args: str, env: dict[str, str]) -> tuple[int, str]:
    return run_on_a_terminal([sys.executable, "-m", "patchaudit.doctor", *args], cwd=REPO, env=env)


def test_colour_on_a_terminal_only() -> None:
    _, coloured = run_in_pty(env={"TERM": "xterm-256color"})
    assert ANSI.search(coloured), (
        "a terminal should get colour (else the next checks prove nothing)"
    )
    _, no_color_env = run_in_pty(env={"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert not ANSI.search(no_color_env)
    assert "net.core.somaxconn" in no_color_env
    _, flag = run_in_pty("--no-color", env={"TERM": "xterm-256color"})
    assert not ANSI.search(flag)
    piped = run_cli(env={"TERM": "xterm-256color"})
    assert not ANSI.search(piped.stdout)
    assert "net.core.somaxconn" in piped.stdout
