"""Run a command the way a user at a terminal would: a 120-column pseudo-terminal as stdout and
stderr. One helper for every test that checks colour and layout on a TTY."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from collections.abc import Sequence
from pathlib import Path


def run_on_a_terminal(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    columns: int = 120,
) -> tuple[int, str]:
    """(exit code, everything written) for ``argv`` run with a ``columns``x40 pty (120 unless
    told); NO_COLOR and FORCE_COLOR from the test's own environment are dropped, ``TERM`` is
    xterm-256color."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO once the child has gone and the follower is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    try:
        process = subprocess.run(
            list(argv),
            stdout=follower,
            stderr=follower,
            cwd=cwd,
            env={**clean, "TERM": "xterm-256color", **(env or {})},
            timeout=120,
        )
    finally:
        os.close(follower)
    reader.join(10)
    os.close(leader)
    return process.returncode, b"".join(chunks).decode("utf-8", "replace")
