"""What `patchaudit bench` was asked for: the defaults, the validation of the arguments into
:class:`SweepOptions`, and the preflight that refuses a run that cannot work before anything
starts. Every refusal is a :class:`BenchUsageError`: one line, exit 2."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

from .._console import UsageError
from ._locust import find_locust, master_bind_problem, parse_master_bind
from .engines import EngineMissing, find_engine
from .limits import ephemeral_ports, fd_problem, raise_nofile
from .servers import SERVER_MODES, SERVER_PACKAGES
from .stats import format_rate
from .sweep import SweepOptions

ENGINES = ("builtin", "ab", "wrk", "locust")
DEFAULT_SERVERS = "gevent,threaded"
DEFAULT_CONCURRENCY = "10,100,1000,5000,10000"  # the post's range
DEFAULT_REQUESTS = 100_000
QUICK = {"concurrency": "10,100,1000", "requests": 2_000, "max_time": 10.0}
# With --rate, -c is the cap on connections in flight rather than a sweep.
DEFAULT_RATE_CAP = 100
KEEP_ALIVE_MODES = ("on", "off", "both")


class BenchUsageError(UsageError):
    """What the user asked for cannot be run; one line, exit 2."""


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchUsageError(f"{option} takes comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise BenchUsageError(f"{option} values must be at least 1")
    return values


def _rates(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchUsageError(
            f"--rate takes comma-separated requests per second, not {text!r}"
        ) from None
    if not values or not all(value > 0 and math.isfinite(value) for value in values):
        raise BenchUsageError(f"--rate values must be positive requests per second, not {text!r}")
    return list(dict.fromkeys(values))


def _keep_alive(value: object, app: str | None) -> tuple[bool, bool, str | None]:
    """(keep-alive, both modes, app) from ``-k/--keep-alive [on|off|both]``.

    A bare ``-k`` before the app (``-k app.py``) hands the app to -k: take it back as the app.
    """
    if isinstance(value, bool):  # a caller that built the namespace itself
        return value, False, app
    if value not in KEEP_ALIVE_MODES:
        # An app spec names a module path, a file or a callable: pkg.mod, file.py, mod:app.
        if app is not None or not any(mark in str(value) for mark in ".:/"):
            raise BenchUsageError(f"--keep-alive takes on, off or both, not {value!r}")
        return True, False, str(value)
    return value == "on", value == "both", app


def _names(text: str, known, what: str, option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in known:
            raise BenchUsageError(f"unknown {what} {name!r} (choose from {', '.join(known)})")
    if not names:
        raise BenchUsageError(f"{option} needs at least one name")
    return list(dict.fromkeys(names))


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    """Validate the arguments; raise BenchUsageError with one line if they cannot be run."""
    quick = getattr(args, "quick", False)
    defaults = QUICK if quick else {
        "concurrency": DEFAULT_CONCURRENCY, "requests": DEFAULT_REQUESTS, "max_time": 300.0
    }  # fmt: skip
    rate_text = getattr(args, "rate", None)
    rates = None if rate_text is None else _rates(rate_text)
    if rates is not None and args.concurrency is None:
        defaults = {**defaults, "concurrency": str(DEFAULT_RATE_CAP)}
    concurrency = defaults["concurrency"] if args.concurrency is None else args.concurrency
    requests = defaults["requests"] if args.requests is None else args.requests
    max_time = defaults["max_time"] if args.max_time is None else args.max_time
    concurrencies = _int_list(concurrency, "--concurrency")
    keep_alive, keep_alive_both, app = _keep_alive(args.keep_alive, args.app)
    servers = _names(args.servers, SERVER_MODES, "server", "--servers")
    engines = _names(args.engine, ENGINES, "engine", "--engine")
    if rates is not None:
        closed = [engine for engine in engines if engine != "builtin"]
        if closed:
            raise BenchUsageError(
                f"--rate needs --engine builtin: {', '.join(closed)} can only send when an answer "
                "arrives (a closed model), so they cannot keep a fixed schedule"
            )
        if len(concurrencies) > 1:
            raise BenchUsageError(
                "with --rate, -c takes one value: the most connections in flight (the rates "
                "are the sweep)"
            )
    if requests < 1:
        raise BenchUsageError("-n/--requests must be at least 1")
    if rates is None and requests < max(concurrencies):
        raise BenchUsageError(
            f"-n {requests} is less than the concurrency {max(concurrencies)}: "
            "every connection needs at least one request"
        )
    for name in ("timeout", "max_time", "grace"):
        value = max_time if name == "max_time" else getattr(args, name)
        if value <= 0:
            raise BenchUsageError(f"--{name.replace('_', '-')} must be a positive number")
    for name in ("processes", "workers", "backlog"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BenchUsageError(f"--{name} must be at least 1")
    if not 0 <= args.port <= 65535:
        raise BenchUsageError("--port must be between 0 and 65535")
    if not args.path.startswith("/"):
        raise BenchUsageError("--path must start with /")
    locust = _locust_options(args, engines, min(concurrencies))
    return SweepOptions(
        servers=servers,
        concurrencies=concurrencies,
        requests=requests,
        app=app,
        engines=engines,
        keep_alive=keep_alive,
        keep_alive_both=keep_alive_both,
        rates=rates,
        timeout=args.timeout,
        max_time=max_time,
        processes=args.processes,
        workers=args.workers,
        pin=args.pin,
        port=args.port,
        backlog=args.backlog,
        path=args.path,
        grace=args.grace,
        **locust,
    )


def _locust_options(args: argparse.Namespace, engines: list[str], concurrency: int) -> dict:
    """--workers-local, --expect-workers, --master-bind, --print-worker-command: locust only."""
    given = [
        option
        for option, value in (
            ("--workers-local", getattr(args, "workers_local", None)),
            ("--expect-workers", getattr(args, "expect_workers", None)),
            ("--master-bind", getattr(args, "master_bind", None)),
            ("--print-worker-command", getattr(args, "print_worker_command", False) or None),
        )
        if value is not None
    ]
    if "locust" not in engines:
        if given:
            raise BenchUsageError(f"{given[0]} only applies to --engine locust")
        return {}
    local, expect = getattr(args, "workers_local", None), getattr(args, "expect_workers", None)
    expect = expect or 0
    if local is not None and local < 0 or expect < 0:
        raise BenchUsageError("--workers-local and --expect-workers cannot be negative")
    if local == 0 and expect == 0:
        raise BenchUsageError("--workers-local 0 needs --expect-workers: locust needs a worker")
    if (local or 0) + expect > concurrency:
        raise BenchUsageError(
            f"-c {concurrency} is less than the {(local or 0) + expect} locust workers: "
            "each worker needs at least one user"
        )
    bind = getattr(args, "master_bind", None) or "127.0.0.1"
    try:
        parse_master_bind(bind)
    except ValueError as exc:
        raise BenchUsageError(str(exc)) from None
    return {"workers_local": local, "expect_workers": expect, "master_bind": bind}


def preflight(options: SweepOptions, plot_path: Path | None) -> list[str]:
    """Refuse what cannot work before starting anything; return warnings worth printing."""
    for server in options.servers:
        package = SERVER_PACKAGES[server]
        if importlib.util.find_spec(package) is None:
            raise BenchUsageError(
                f"server {server} needs {package}, which is not installed: "
                "`pip install 'patchaudit[harness]'`"
            )
    for engine in options.engines:
        if engine == "builtin":
            if importlib.util.find_spec("hdrh") is None:
                raise BenchUsageError(
                    "the built-in client needs hdrhistogram: `pip install 'patchaudit[harness]'`"
                )
        elif engine == "locust":
            try:
                find_locust()
            except EngineMissing as exc:
                raise BenchUsageError(str(exc)) from None
            problem = master_bind_problem(options.master_bind)
            if problem:
                raise BenchUsageError(problem)
        else:
            try:
                find_engine(engine)
            except EngineMissing as exc:
                raise BenchUsageError(str(exc)) from None
    if plot_path is not None:
        from .results import check_plot_path

        problem = check_plot_path(plot_path)
        if problem:
            raise BenchUsageError(problem)
    raise_nofile()
    problem = fd_problem(max(options.concurrencies))
    if problem:
        raise BenchUsageError(problem)
    warnings = []
    ports = ephemeral_ports()
    if ports and False in options.keep_alive_modes and max(options.concurrencies) > ports:
        warnings.append(
            f"only {ports} local ports: a concurrency above that cannot connect "
            "(widen net.ipv4.ip_local_port_range)"
        )
    for rate in options.rates or ():
        seconds = options.requests / rate
        if seconds > options.max_time:
            warnings.append(
                f"-n {options.requests:,} at --rate {format_rate(rate)} takes {seconds:,.0f}s, "
                f"so --max-time {options.max_time:g} ends the run first"
            )
    return warnings
