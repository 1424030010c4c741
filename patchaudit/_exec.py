"""Run a program supervised: ``python -I -S _exec.py CPUS PROGRAM [ARGS...]``.

Programs that cannot call :func:`patchaudit._supervise.supervise` themselves (bench's ab and wrk,
the user's own command under ``patchaudit run``) get it from this script, which calls it and then
replaces itself with the program (``os.execv``). The supervisor that ``supervise()``
forks stays behind as the program's parent and process-group leader, so the program dies with
patchaudit exactly like the harness's Python children, ``kill -9`` included; and since the exec
keeps the pid, signals to the group reach the program itself (the supervisor ignores SIGINT and
SIGTERM). ``CPUS`` is ``-`` or a comma-separated list of CPUs to pin the program to: set here,
before the fork, because pinning the supervisor's pid from outside would miss the program.

Standard library only, run without the current directory on ``sys.path`` (``-I``); patchaudit
imports it for :func:`exec_command`, the argv that runs it.
"""

import importlib.util
import os
import signal
import sys


def _supervise():
    path = os.environ.get("PATCHAUDIT_SUPERVISE_SCRIPT")  # set by patchaudit._process.spawn
    if path:
        spec = importlib.util.spec_from_file_location("_patchaudit_supervise", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.supervise()


def exec_command(argv, cpus=None):
    """What :func:`patchaudit._process.spawn` runs for a program that cannot supervise itself
    (ab, wrk, the user's command): this script, which supervises and then execs ``argv``, pinned
    to ``cpus``.

    ``-I -S``: the wrapper needs nothing but the standard library, and isolated mode keeps the
    current directory off its ``sys.path``; the program it execs gets the environment unchanged.
    """
    pinned = ",".join(str(cpu) for cpu in sorted(cpus)) if cpus else "-"
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), pinned, *argv]


def main():
    cpus, program = sys.argv[1], sys.argv[2:]
    if cpus != "-":
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    _supervise()
    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec:
    # give the program the defaults it would get from subprocess.Popen.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execv(program[0], program)
    except OSError as exc:
        sys.stderr.write("patchaudit: cannot run " + program[0] + ": " + str(exc.strerror) + "\n")
        sys.stderr.flush()
        os._exit(127)


if __name__ == "__main__":
    main()
