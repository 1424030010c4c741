"""`patchaudit ...`: parse, run the command, and turn every way out into one exit code.

Exit codes (see ``_console``): 0 nothing at or above ``--fail-on``, 1 findings (or a failed
run), 2 usage or configuration errors or nothing could be analysed; 130/143 when Ctrl-C/SIGTERM
stopped it. Every failure is one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .._console import (
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_USAGE,
    UsageError,
    print_error,
    print_internal_error,
)
from ._parser import build_parser, command_module, selected_command, with_command


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        args_list = with_command(args_list)
        args = build_parser(selected_command(args_list)).parse_args(args_list)
        if args.command is None:
            raise UsageError(
                "missing command: use `patchaudit TARGET`, `patchaudit check [PATH ...]`, "
                "`patchaudit rules` or `patchaudit matrix`"
            )
        command = command_module(args.command)
        if getattr(command, "SPAWNS", True):
            from .. import _process

            # The command starts children: what they detach is re-parented to us.
            _process.become_subreaper()
        if getattr(command, "INTERRUPTIBLE", False):
            return run_interruptible(command.run, args)
        return command.run(args)
    except BrokenPipeError:
        # The reader went away (`| head`); silence the final flush as well.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("patchaudit: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Exception as exc:
        if _is_user_error(exc):
            if debug:
                import traceback

                traceback.print_exception(exc)
            print_error(exc)
        else:
            print_internal_error(exc, debug=debug)
        return EXIT_USAGE
    except BaseException as exc:  # SIGINT/SIGTERM of a command that reports them itself
        from .._process import Interrupted

        if not isinstance(exc, Interrupted):
            raise
        print(f"patchaudit: {exc}", file=sys.stderr)
        return exc.exit_code


def _is_user_error(exc: Exception) -> bool:
    """Errors that describe the user's input or machine, not a bug of ours."""
    if isinstance(exc, UsageError):
        return True
    from .._config import ConfigError
    from .._gevent_patches import PatchListError
    from ..runtime import ProbeError, TargetError
    from ..static._discover import DiscoveryError

    return isinstance(exc, ConfigError | DiscoveryError | TargetError | ProbeError | PatchListError)


def run_interruptible(
    command: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """Run ``command`` so that SIGINT/SIGTERM end it with 130/143 and one line, no traceback.

    The audit handles the interrupt itself (it reports what it gathered); anywhere else the
    command just stops. Either way no child, pool worker or scratch folder is left behind, and
    the process then exits at once, without the interpreter's shutdown (a second signal during
    that shutdown would kill it by the signal). A second signal before that also exits at once
    (see :func:`patchaudit._process.interruptible`).
    """
    from .. import _process, _scratch

    with _process.interruptible(stop_workers=True):
        try:
            code = command(args)
        except BaseException as exc:
            interrupted = _process.interruption(exc)
            if interrupted is None:
                raise
            print(f"patchaudit: {interrupted}", file=sys.stderr)
            code = interrupted.exit_code
        finally:
            _process.kill_all()
            _scratch.remove_all()
        if _process.interruption() is not None:
            _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)
