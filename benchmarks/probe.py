"""What the runtime probe costs, measured side by side in one run.

1. Import recording: a heavy real import set (gevent, urllib3, the stdlib http, email, json,
   logging, asyncio and ssl stacks) imported plainly, and imported as the target of the probe.
   The target module times its own imports with perf_counter, so both numbers cover exactly the
   same code and exclude interpreter start-up. Target: at most 10 % slower under the probe.
2. The wall time of a full `patchaudit TARGET` on a small bundled app (both probe runs, the
   static check, the request probe). Target: under 3 s on this machine.

Usage: python benchmarks/probe.py [--repeat 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = REPO / "patchaudit" / "probe" / "__main__.py"
HEAVY = """\
import time as _t
_start = _t.perf_counter()
import gevent, gevent.pywsgi, gevent.queue, gevent.pool
import urllib3
import http.client, http.server, http.cookies, urllib.request, xmlrpc.client
import email.mime.multipart, email.mime.text, email.parser, smtplib
import json, logging.handlers, asyncio, sqlite3, ssl, decimal, csv, zipfile, tarfile
_elapsed = _t.perf_counter() - _start
import os as _os
with open(_os.environ["HEAVY_RESULT"], "w") as _f:
    _f.write(repr(_elapsed))
"""


def _run_plain(workdir: Path, result: Path) -> float:
    env = {**os.environ, "HEAVY_RESULT": str(result), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(
        [sys.executable, "-c", "import heavy"], cwd=workdir, env=env, check=True, timeout=120
    )
    return float(result.read_text())


def _run_probed(workdir: Path, result: Path) -> float:
    events = workdir / "events.jsonl"
    events.unlink(missing_ok=True)
    spec = {
        "target": {
            "kind": "module",
            "module": "heavy",
            "file": None,
            "callable": None,
            "factory": False,
        },
        "mode": "as-is",
        "chdir": str(workdir),
        "pythonpath": [],
        "events_path": str(events),
        "app_roots": [str(workdir)],
        "serve": {
            "paths": [],
            "requests": 0,
            "concurrency": 1,
            "max_blocking": 0.1,
            "request_timeout": 5,
        },
    }
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "HEAVY_RESULT": str(result),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(workdir),
    }
    subprocess.run(
        [sys.executable, str(PROBE), "--spec-file", str(spec_path)],
        cwd=workdir,
        env=env,
        check=False,
        timeout=120,
        capture_output=True,
    )
    return float(result.read_text())


def _full_audit(app: Path, scratch: Path) -> float:
    project = scratch / "app"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(app, project)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "patchaudit",
            "throttle:application",
            "--no-cache",
            "--format",
            "json",
            "--requests",
            "20",
            "--concurrency",
            "10",
        ],
        cwd=project,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patchaudit-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "heavy.py").write_text(HEAVY)
        result = workdir / "result.txt"
        _run_plain(workdir, result)  # warm the OS file cache once
        plain, probed = [], []
        for _ in range(args.repeat):  # alternate, so machine noise hits both sides alike
            plain.append(_run_plain(workdir, result))
            probed.append(_run_probed(workdir, result))
        app = REPO / "fixtures" / "apps" / "MPA251" / "fixed"
        _full_audit(app, workdir)
        audits = [_full_audit(app, workdir) for _ in range(max(3, args.repeat // 2))]
    plain_s, probed_s = statistics.median(plain), statistics.median(probed)
    overhead = probed_s / plain_s - 1
    audit_s = statistics.median(audits)
    print(f"heavy import set, plain          median {plain_s * 1000:7.1f} ms  ({args.repeat} runs)")
    print(f"heavy import set, under probe    median {probed_s * 1000:7.1f} ms")
    print(
        f"import-recording overhead        {overhead * 100:+.1f} %  (target <= +10 %): "
        f"{'PASS' if overhead <= 0.10 else 'FAIL'}"
    )
    print(
        f"full `patchaudit TARGET` (small app, 20 requests)  median {audit_s:.2f} s  "
        f"(target < 3 s): {'PASS' if audit_s < 3 else 'FAIL'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "plain_ms": plain_s * 1000,
                    "probed_ms": probed_s * 1000,
                    "overhead": overhead,
                    "audit_s": audit_s,
                    "runs": {"plain": plain, "probed": probed, "audit": audits},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
