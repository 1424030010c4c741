"""The probe: import a real app the way its server would, and record what happens.

A package of the standard library only (gevent, eventlet and zope.event are used only if the
app brings them in). It runs inside the audited process, so it never imports patchaudit: it is
started by path with the *application's* interpreter, through its boot script
(``python /path/probe/__main__.py --spec-file SPEC.json``, see ``__main__.py``), which takes
the ``sys.modules`` snapshot, forks the supervisor (``patchaudit._supervise``) and loads this
folder under the private name ``_patchaudit_probe``, so that no module of the app can shadow
one of the probe's. The pytest plugin loads it the same way into the test process
(:mod:`._inprocess`). Jobs: the audit (``--spec-file``, :mod:`._audit_job`) and the patch lists
(``--patch-lists``, :mod:`._patch_lists`: what the installed gevent's ``patch_all()`` replaces)
and the gunicorn settings (``--gunicorn-config [PATH]``, :mod:`._gunicorn_config`: the config
file executed, ``GUNICORN_CMD_ARGS`` applied; one JSON object on stdout).

Modules, by concern: :mod:`._machinery` (shared names), :mod:`._state`, :mod:`._events`
(emission), :mod:`._frames`, :mod:`._recorder` (the import hook), :mod:`._patches` (the table
of watched patch functions), :mod:`._blocking`, :mod:`._hubtime` (how long each greenlet held
the hub), :mod:`._process_wrappers` (fork, exit, setsid,
SIGTERM), :mod:`._errors`, :mod:`._target`, :mod:`._gunicorn` (gunicorn's config and server
hooks in the audit), :mod:`._stale` (stale references),
:mod:`._libraries` (owners, C-driver checks), :mod:`._serving` (pywsgi load), :mod:`._hangs`
(the dump of parked greenlets and threads), :mod:`._fork_checks` (what breaks after a fork),
:mod:`._run_job` (``patchaudit run``: every process of a real command).

Constraints (keep them when editing):

* stdlib + gevent only; never import patchaudit, and only relative imports inside the package;
* keep the syntax old enough to run on any Python that gevent still supports (no ``match``,
  no walrus, no annotations that fail when evaluated on an old Python);
* import nothing that gevent patches (socket, ssl, threading, select, queue, subprocess, ...)
  before the target has been imported and patched: doing so would change what is audited. Even
  ``importlib.metadata`` is off limits at start-up (it imports ``zipfile``, which imports
  ``threading``), so package versions are read from ``*.dist-info/METADATA`` by hand;
* never raise out: every step runs guarded and reports an ``error`` event instead;
* a forked child of the application never writes results and never leaves the process group;
* started by patchaudit, the boot script first forks the supervisor: the probe then runs as the
  supervisor's child, so ``os.getppid()`` of the app is the supervisor, and the launcher's
  ``ProbeRun.pid`` is the supervisor's pid;
* no module over 400 lines (a test checks all of this).

Spec (JSON object read from ``--spec-file``)
--------------------------------------------

``target``
    ``{"kind": "module"|"file", "module": "app.wsgi", "file": "/abs/app.py"|null,
    "callable": "app"|null, "factory": bool}``. For ``kind == "file"`` the file is executed as
    a module named ``module`` (default: the file's stem). ``callable`` may be dotted
    (``"server.app"``) and may end in ``"()"`` (gunicorn's ``module:factory()``), which is the
    same as ``factory: true``: the factory is called with no arguments.
``mode``
    ``"as-is"``: import the target, which may patch itself. ``"gunicorn"``: ``patch_all()`` then
    import (gunicorn's gevent worker). ``"gunicorn-preload"`` and ``"uwsgi"``: import (and resolve
    the callable) then ``patch_all()``. ``"patch-first"``: baseline; patch, import, resolve, then
    only ``settings`` + stale scan (no owners, serving or library checks). Steps after import:
    target, (mode patch), owners, stale scan, serve, libraries; when the import fails, the
    target, mode patch and serving are skipped but the process is still described.
``gunicorn``
    ``{"config": "/abs/gunicorn.conf.py"|null, "settings": {name: value}, "worker_patch":
    {"module", "qualname"}|null}`` (from the ``--gunicorn-config`` job), only honoured in the two
    gunicorn modes: the probe then runs gunicorn's steps in gunicorn's order, in one process:
    the config file and the import of a ``worker_patch`` class (master), the app load with
    preload, ``on_starting``, ``when_ready``, ``pre_fork`` (master), ``post_fork`` (worker), the
    worker's patch (``patch_all()``, or that class's own ``patch()``), the app load without
    preload, ``post_worker_init``.
    Hooks get stand-ins for the arbiter and worker whose ``cfg`` holds ``settings``.
``chdir``, ``pythonpath``
    Working directory and ``sys.path`` entries (inserted at the front if missing).
``events_path``
    Where events are appended (one JSON object per line, flushed as it happens).
``serve``
    ``{"paths": ["/"], "requests": 20, "concurrency": 10, "max_blocking": 0.1,
    "request_timeout": 10}``; null or no paths: do not serve.
``app_roots``
    Directories whose files count as application code (for ``fork`` frames).

Events (the contract with the part that turns them into findings)
-------------------------------------------------------------------

Every line is ``{"event": NAME, "t": seconds since probe start, ...}``. Lines written by a forked
child of the application also carry ``"pid"`` and ``"forked_child": true``; a forked child writes
only facts about itself (``import``, ``fork``, ``fork_hook``), never ``patch``, ``target``,
``serve``, ``error`` or ``done``: it exits silently as soon as the probe's code regains control.
"Probe step" values used in ``phase`` fields (except ``import.phase``) are ``"startup" |
"config" | "hook" | "patch" | "import" | "target" | "owners" | "stale" | "serve" |
"libraries"`` (``config`` and ``hook``: gunicorn's config file and server hooks, see the spec's
``gunicorn``; ``"exit"``, while a process that forked waits for its children at ``os._exit``;
``"run"`` under ``patchaudit run``).
A *frame* is ``{"file", "line", "function", "code"}`` (``code``: the source line or null); frame
lists are outermost first, innermost last.

``process``
    Only under ``patchaudit run`` (the run job, ``_run_job.py``), after ``start`` or first in
    the file of a forked process: ``pid``, ``ppid``, ``argv`` (``sys.orig_argv``, else
    ``/proc/self/cmdline``), ``executable``, ``python`` (an interpreter that can run the probe's
    jobs; not the embedding program), ``forked_from`` (the parent's pid for a fork, else null),
    ``inherited`` (bytes of the parent's events file written at the fork: that part of the
    parent's timeline is this process's too), ``wall`` (``time.time()``, to place events in
    wall-clock time). Steps are ``"run"`` while the program runs; ``block`` events then carry
    ``phase: "run"``, which patchaudit renames by when they happened. The script the
    interpreter ran is recorded as an ``import`` of ``__main__`` (importer ``"<run>"``) at the
    first patch; imports and patch calls made from C by an embedding launcher have importer and
    ``file`` ``"<launcher>"``.
``start``
    ``executable``, ``python_version`` ("3.11.7"), ``implementation``, ``platform``, ``pid``,
    ``gevent_version`` (from dist-info, gevent not imported; null if absent),
    ``eventlet_version`` (or null), ``mode``, ``target`` (the spec's target),
    ``startup_modules`` (sorted ``sys.modules`` when the probe started), ``probe_modules``
    (modules the probe itself added before the app ran: json, linecache, the probe's own
    ``_patchaudit_probe.*``), ``schema`` (the version of this vocabulary, 1; bumped when a
    field changes meaning, not when one is added).
``import``
    First import of each module, in order: ``module``, ``importer`` (``__name__`` of the module
    whose code triggered it; ``"<target>"`` for the target module and its parent packages,
    and for gunicorn's config module ``__config__``, loaded by path like a target file;
    ``"<probe>"`` when the probe itself imported it), ``line`` (the importer's line that was
    executing when the import started, or null), ``file`` (spec origin, or null for built-in,
    frozen and namespace modules), ``phase`` (``"pre-patch"`` until the first patch call starts,
    then ``"post-patch"``), ``found`` (false: no finder found it, i.e. it raised
    ModuleNotFoundError; null: a legacy finder was involved and the probe could not tell).
    ``importlib.util.find_spec()`` look-ups are not imports and are not recorded.
``patch``
    One per outermost patch call (calls nested in ``patch_all`` are not events):
    ``framework`` ("gevent"|"eventlet"), ``function`` ("patch_all", "patch_socket", ...,
    "monkey_patch"), ``args`` (number of positional args; null when seen only through the
    event), ``kwargs`` (JSON-safe), ``file``/``line`` (caller: first frame outside
    gevent/eventlet/zope/the probe; ``"<patchaudit:MODE>"`` and null when the probe patched
    because of the mode), ``main_thread`` (bool), ``threads`` (names from
    ``threading.enumerate()``, the main thread always as ``"MainThread"``, whatever an
    embedding server named it; ``["MainThread"]`` if threading was not imported),
    ``modules_before`` (sorted ``sys.modules``; only on the first patch call of the process,
    otherwise absent), ``returned`` (JSON-safe return value), ``raised`` ("Type: message" or
    null), ``warnings`` (list of ``{"category", "message", "file", "line"}``: gevent's
    ``MonkeyPatchWarning`` s raised by the call; for eventlet every warning raised by the call;
    they are recorded, not shown), ``via`` ("wrapper", or "GeventWillPatchAllEvent" when the
    call bypassed the wrapper and was only seen through gevent's event). eventlet adds
    ``already_patched`` (``eventlet.patcher.already_patched`` after the call).
``settings``
    After the first gevent patch: ``settings``
    (``saved['_gevent_saved_patch_all_module_settings']`` or null) and ``saved``
    (``{target module: sorted names}``).
``fork``
    The app called ``what`` = ``"os.fork"``, ``"os.forkpty"``, ``"os.setsid"``,
    ``"os.setpgrp"``, ``"os.setpgid"``, ``"os.closerange"`` or ``"daemon.DaemonContext.open"``:
    ``file``/``line`` (innermost frame under ``app_roots``, else the first frame outside the
    probe, gevent and the stdlib), ``after_patch`` (bool), ``phase`` (probe step), ``contained``
    (true when the probe suppressed the call: setsid/setpgrp/setpgid in a forked child, so the
    child stays in the launcher's process group), ``via`` (``__name__`` of the module that made
    the call, e.g. the app module, ``multiprocessing.popen_fork`` or ``daemon.daemon``). The
    fork+exec inside ``gevent.subprocess`` is not reported (like stdlib subprocess's, which
    forks in C). After patching, ``os.fork``/``os.forkpty`` add ``threads`` (every other native
    thread, ``{"thread", "stack"}``: the child gets only the forking one), ``gevent_fork``
    (the call went through ``gevent.os``, which re-initialises the child's hub) and ``hub``
    (a hub was running). ``os.closerange`` adds ``hub_fds`` (descriptors of the running hub's
    event loop inside the closed range; ``[]`` with no hub: gevent creates it on first use).
    A process that forked and then calls ``os._exit`` waits a second first (step ``"exit"``,
    after its ``exit`` and ``done``) so that its children's events are written.
``fork_hook``
    Written by a forked child: an ``after_in_child`` hook the app registered with
    ``os.register_at_fork`` switched greenlets while the parent's hub was inherited and not yet
    re-initialised (gevent does that only after the fork returns): ``hook`` (qualified name),
    ``when`` ("after_in_child"), ``file``/``line`` (where the app registered it),
    ``wait_file``/``wait_line`` (the app line that waited), ``stack``. Registrations made by
    the probe's own code are not watched.
``exit``
    The app called ``os._exit`` in the probe process: ``code``, ``file``, ``line``, ``phase``.
    Followed by ``done``.
``terminated``
    The probe got SIGTERM (the launcher's timeout): ``signal``, ``phase``, ``serve_path``,
    ``stack`` (main thread, frames), ``main_greenlet_stack`` (frames of the switched-out main
    greenlet when the signal landed in gevent's hub -- that is where the app is stuck; else
    null), ``greenlets`` (every parked greenlet: ``greenlet`` type name, ``stack``,
    ``waits_on`` such as ``Queue.get`` when a Python frame shows it, else null; ``waits_for``:
    the gevent lock, event, result or queue the greenlet is linked to, ``{"type": "Lock",
    "name": "ACCOUNTS['a'].lock"}`` with the app variable that holds it or a null ``name``,
    else null; ``request``: true when it is serving one of the probe's requests) and
    ``threads`` (every other native thread: ``thread`` ident, ``stack``, ``waits_for``: the
    stdlib or gevent event, condition, lock or queue whose ``wait``/``get``/``acquire`` a Python
    frame shows it in, named as for greenlets, else null). Followed by ``done``.
``stalled``
    A request got no response within the request timeout while the process lived on (once per
    path, taken while the handlers are still parked): ``path``, ``timeout`` (the request
    timeout, seconds), ``requests`` (of the batch), ``greenlets`` and ``threads`` as in
    ``terminated`` (one dump implementation, :mod:`._hangs`). The ``serve`` event follows; its
    ``errors`` for such requests start with ``"no response within the request timeout: "``;
    the requests of the batch not yet sent then are not sent (their error says so, and their
    ``statuses`` key is ``"not-sent"``).
``gunicorn``
    One per gunicorn step the probe ran (spec ``gunicorn``): ``step`` (``"config"``, the hook
    name, or ``"Class.patch"`` for a worker class's own patch), ``process`` (``"master"`` or
    ``"worker"``: where gunicorn runs it), ``file``/``line`` (the config file, line null; or
    the hook's ``def``), ``after_patch`` (bool, when the step started), ``calls`` (calls the
    step made to ``grpc.experimental.gevent.init_gevent`` or
    ``psycogreen.gevent.patch_psycopg``: ``{"function", "after_patch"}`` plus the caller's app
    frame), ``raised`` ("Type: message" or null; the ``error`` event follows, unless
    ``stand_in_gap`` is true: the step used an attribute the stand-ins lack, it stopped there
    and the audit went on).
``target``
    ``module``, ``file``, ``callable`` (name resolved or null), ``wsgi`` (found and callable),
    ``reason`` (why not, else null), ``factory_called`` (bool).
``owners``
    ``owners``: ``{"socket.socket": "gevent._socket3", "threading.Lock": ..., "threading.Thread",
    "time.sleep", "select.select", "ssl.SSLContext", "queue.Queue"}`` -> ``__module__`` of the
    current object, null when that module was never imported.
``stale``
    One per holder of an unpatched original from ``gevent.monkey.saved``: ``holder``
    ("app.throttle" or "app.pool.Pool"), ``holder_kind`` ("module"|"class"|"subclass"),
    ``holder_module``, ``holder_file`` (module ``__file__`` or null), ``name`` (attribute in the
    holder; ``"__bases__"``/``"__mro__"`` for direct/indirect subclasses), ``original``
    ("time.sleep"). Skipped holders: gevent/eventlet/zope/greenlet, the probe, the module(s)
    the original was saved from, and the built-in/stdlib C modules that implement originals
    (``posix``, ``_socket``, ``_thread``, ...). Interpreter start-up still leaves a few
    (``functools.RLock``, ``reprlib.get_ident``, ...): diff against a ``patch-first`` run.
    ``how``: ``"binding"`` (the attribute is the original) or ``"subclass"``, for every holder;
    and, for the app's modules only (under ``app_roots``; :mod:`._stale_walk`), what is held a
    few steps from a module global or a class attribute: ``"default"`` (a function's default
    or keyword default), ``"closure"`` (a closure cell), ``"partial"`` (``functools.partial``
    func/args/keywords), ``"container"`` (dict/list/tuple/set item), ``"method"`` (a bound
    method's function or object), ``"attribute"`` (an object's instance attribute), or
    ``"instance"``: an instance of an original class (or of its subclass) made before
    patching, only for the kinds that break under gevent (``queue.SimpleQueue``, a
    ``ThreadPoolExecutor``'s work queue among them; ``threading.local``;
    ``selectors.EpollSelector``; ``select.epoll``); ``original`` then names the class. For
    those, ``name`` is the path from the holder: ``"POOL._work_queue"``, ``"pause(sleep=)"``,
    ``"backoff<nap>"`` (closure variable), ``"WAITS['pause']"``, ``"NAP.func"``; its first
    name is the one bound in the holder. An object several app modules hold is reported by
    each of them. The walk is bounded (depth 4, 200 items per container, 500,000 objects,
    1.5 s) and reads only plain instance dicts: no property or ``__getattr__`` of the app runs.
``stale_scan``
    After the scan: ``originals`` (how many saved originals were scanned), ``holders`` (stale
    events written), ``walked`` (objects the walk from the app's modules looked at),
    ``complete`` (false when the walk stopped at one of its bounds). Absent when gevent never
    patched.
``serve``
    Per path: ``port``, ``path``, ``single`` (latency of one request alone, null if it failed),
    ``single_status``, ``single_error``, ``requests``, ``concurrency``, ``wall`` (seconds for the
    concurrent batch), ``latencies`` (per request, null if failed), ``statuses``
    (``{"200": 19, "none": 1}``), ``errors`` (error strings of the failed requests),
    ``server_errors`` (lines pywsgi wrote to its error log, at most 20).
    Or, when serving was not attempted: ``{"skipped": reason}``.
``request_error``
    The app raised while handling a request (once per distinct path/type/message): ``path``,
    ``type``, ``message``, ``traceback`` (frames).
``block``
    gevent's monitor thread saw the hub blocked: ``blocking_time`` (gevent passes its
    *threshold*, ``GEVENT_MAX_BLOCKING_TIME``, not the measured time), ``phase`` (probe step),
    ``path`` (request path being served, or null), ``greenlet`` (repr), ``stack`` (frames of the
    hub's thread when the report was made, so the innermost line is wherever the blocking code
    was at that moment: for a CPU loop, any line of the loop), ``stack_source`` ("frames" or
    "report" when parsed from gevent's text report). Reported once per monitor period while
    the hub stays blocked, so one long block gives several events. Only while app code runs
    (steps ``import``, ``target`` and the requests of ``serve``): reports that land while the
    probe itself works (patching for the mode, owners, the stale scan) are dropped, and so are
    reports that land once the run they saw is over (gevent writes its report long after it
    looked; ``hub_run`` covers that run), or while the step changes under the stack being read:
    ``phase``, ``path`` and ``stack`` are always of one moment.
``hub_run``
    The hub's thread ran one greenlet longer than gevent's ``max_blocking_time`` between two
    switches (timed with ``greenlet.settrace`` from the moment the hub starts, :mod:`._hubtime`):
    ``duration`` (measured seconds), ``started`` (``t`` of the run's start), ``greenlet``
    (repr), ``finished`` (the greenlet ended, so it had no frame left at the switch),
    ``stack`` (its frames at the switch, null when finished), ``tail`` (seconds after the last
    sample), ``phase``/``path`` (probe step and request path at the switch) and ``samples``:
    ``[{"phase", "path", "weight", "stack"}]``, the hub thread's stack sampled while the run
    was already long, by SIGPROF every half threshold of CPU time (in the main thread only,
    when the app has no SIGPROF handler or profiling timer of its own; it runs as soon as a C
    call holding the GIL returns, so it names the calling line) and by a sampler thread (for
    waits that let the GIL go); ``weight`` is the run's time each distinct stack accounts
    for. Samples are taken only while app code runs; a run with no sample that ends during a
    probe step is not reported.
``libraries``
    One per checked library present in ``sys.modules``: ``library``, ``check``, ``ok``
    (true/false, or null when not applicable because gevent did not patch socket), ``detail``.
``error``
    ``kind`` ("import-error"|"syntax-error"|"system-exit"|"exception"), ``type`` (qualified
    unless builtin), ``message``, ``traceback`` (frames, without the probe's and importlib's;
    importlib's are kept when nothing else is left),
    ``import_chain`` (module names from the first one the target import triggered to the one
    that failed, e.g. ``["app", "app.a", "app.b", "missing_mod"]``; ``[]`` when unknown),
    ``phase`` (probe step), ``code`` (SystemExit only), ``name`` (ImportError's ``name``),
    ``file``/``line`` (SyntaxError only).
``done``
    Last line: ``status`` ("ok"|"error"), ``errors`` (number of error events), ``reason``
    ("os._exit"|"SIGTERM"|null).
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))

#: The boot script: both jobs run it by path with the target interpreter (see :func:`command`).
BOOT_SCRIPT = os.path.join(_HERE, "__main__.py")


def command(python, *job_args):
    """The argv that runs one probe job: ``command(python, "--patch-lists")``."""
    return [python, BOOT_SCRIPT] + list(job_args)


def source_files():
    """Every source file of the probe, sorted (what a cache of its answers must be keyed by)."""
    return sorted(os.path.join(_HERE, n) for n in os.listdir(_HERE) if n.endswith(".py"))
