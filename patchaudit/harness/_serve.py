"""Server child for `patchaudit bench`: ``python -P _serve.py '<json config>'``.

Run as a script, never imported from the package: the patched kinds must call ``patch_all()``
before anything else is imported, and importing ``patchaudit`` first would load ``ssl``,
``threading`` and friends unpatched (the very mistake patchaudit reports). Safe-path mode (``-P``,
or its stand-in on Python 3.10, see ``_children.python_command``) keeps both the current
directory and this script's folder off ``sys.path``: the only module imported by name from a
folder of the user's is the app, from the folder its spec names (``load_app``).

The first thing it does is :func:`patchaudit._supervise.supervise` (loaded by the path
``patchaudit._process.spawn`` puts in ``PATCHAUDIT_SUPERVISE_SCRIPT``; standard library only):
from then on a supervisor process ends the server and everything it started when bench ends,
however bench ends, so the server never watches its parent itself.

The child binds its own socket (port 0 = ephemeral, so there is no race between choosing a port
and binding it), writes the port number to the file descriptor ``ready_fd`` and serves until it
is signalled. Failures print one line to stderr and exit with status 3.
"""

import os
import sys


def _supervise():
    path = os.environ.get("PATCHAUDIT_SUPERVISE_SCRIPT")
    if path:  # absent when run by hand: then there is no supervisor
        import importlib.util

        spec = importlib.util.spec_from_file_location("_patchaudit_supervise", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.supervise()


if __name__ == "__main__":
    _supervise()

import json  # noqa: E402 - after the fork: the supervisor needs none of this

EXIT_START_FAILED = 3

# The post's page ("gevent: the Good, the Bad, the Ugly"): lorem ipsum x10, text/html.
_PARAGRAPH = """
        Lorem ipsum dolor sit amet,
        consectetur adipisicing elit,
        sed do eiusmod tempor incididunt ut labore et
        dolore magna aliqua. Ut enim adminim veniam,
        quis nostrud exercitation ullamco laboris nisi ut aliquip
        ex ea commodo consequat.
        Duis aute irure dolor in reprehenderit in
        voluptate velit esse cillum dolore eu fugiat nulla pariatur.
        Excepteur sint occaecat cupidatat non proident,
        sunt in culpa qui officia deserunt mollit anim id est laborum.
    """
PAGE = (
    f"""
        <html>
            <head>
                <title>Static Page</title>
            </head>
            <body>
                <h1>Static Content</h1>
                {_PARAGRAPH * 10}
            </body>
        </html>
    """
).encode("ascii")


def demo_app(environ, start_response):
    # Content-Length (absent from the post) lets every server keep connections alive and lets
    # the client check that the whole body arrived.
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


class _CappedStream:
    """stderr that stops after a budget, so 100,000 app tracebacks cannot fill the disk."""

    def __init__(self, stream, budget=256 * 1024):
        self._stream = stream
        self._left = budget

    def write(self, text):
        if self._left <= 0:
            return len(text)
        if len(text) > self._left:
            text = text[: self._left] + "\n[patchaudit: further server output dropped]\n"
        self._left -= len(text)
        self._stream.write(text)
        self._stream.flush()
        return len(text)

    def flush(self):
        self._stream.flush()

    def fileno(self):
        return self._stream.fileno()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def fail(message):
    sys.stderr.write("patchaudit-serve: " + message + "\n")
    sys.stderr.flush()
    os._exit(EXIT_START_FAILED)


def load_app(spec, cwd):
    """`pkg.module[:callable]`, `module:factory()` or `path/file.py[:callable]`, after patching."""
    if not spec:
        return demo_app
    import importlib
    import importlib.util

    location, _, attribute = spec.partition(":")
    factory = attribute.endswith("()")
    name = attribute[:-2] if factory else attribute
    if location.endswith(".py") or os.sep in location:
        path = os.path.abspath(os.path.join(cwd, location))
        if not os.path.isfile(path):
            fail("app file not found: " + location)
        sys.path.insert(0, os.path.dirname(path))
        module_name = os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, cwd)
        module = importlib.import_module(location)
    candidates = [name] if name else ["application", "app"]
    for candidate in candidates:
        app = getattr(module, candidate, None)
        if app is not None:
            return app() if factory else app
    fail(f"no WSGI callable {' or '.join(candidates)!r} in {location}")


def listen(sock_module, host, port, backlog):
    sock = sock_module.socket(sock_module.AF_INET, sock_module.SOCK_STREAM)
    sock.setsockopt(sock_module.SOL_SOCKET, sock_module.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == 98:  # EADDRINUSE
            fail(f"port {port} on {host} is already in use")
        fail(f"cannot bind {host}:{port}: {exc.strerror}")
    sock.listen(backlog)
    return sock


def report_ready(config, port):
    os.write(config["ready_fd"], b"%d\n" % port)
    os.close(config["ready_fd"])


def serve_gevent(config):
    from gevent import monkey

    monkey.patch_all()
    import socket

    from gevent.pywsgi import WSGIServer

    app = load_app(config["app"], config["cwd"])
    sock = listen(socket, config["host"], config["port"], config["backlog"] or 128)
    server = WSGIServer(sock, app, spawn=config["concurrency"], log=None)
    server.start()
    report_ready(config, sock.getsockname()[1])
    server.serve_forever()


def serve_eventlet(config):
    import eventlet

    eventlet.monkey_patch()
    import eventlet.wsgi

    app = load_app(config["app"], config["cwd"])
    try:
        sock = eventlet.listen((config["host"], config["port"]), backlog=config["backlog"] or 50)
    except OSError as exc:
        if exc.errno == 98:
            fail(f"port {config['port']} on {config['host']} is already in use")
        raise
    report_ready(config, sock.getsockname()[1])
    eventlet.wsgi.server(
        sock, app, max_size=config["concurrency"], log_output=False, log=sys.stderr
    )


def serve_threaded(config):
    from paste import httpserver

    app = load_app(config["app"], config["cwd"])
    try:
        server = httpserver.serve(
            app,
            host=config["host"],
            port=str(config["port"]),
            use_threadpool=True,
            threadpool_workers=config["concurrency"],
            # Paste asserts spawn_if_under (default 5) <= workers: keep small pools working.
            threadpool_options={"spawn_if_under": min(5, config["concurrency"])},
            request_queue_size=config["backlog"] or 5,  # Paste's default, as in the post
            start_loop=False,
        )
    except OSError as exc:
        if exc.errno == 98:
            fail(f"port {config['port']} on {config['host']} is already in use")
        raise
    report_ready(config, server.server_port)
    server.serve_forever()


def serve_gunicorn(config, worker_class):
    import math
    import socket

    from gunicorn.app.base import BaseApplication

    sock = listen(socket, config["host"], config["port"], config["backlog"] or 2048)
    sock.set_inheritable(True)
    workers = config["workers"]
    options = {
        "bind": f"fd://{sock.fileno()}",
        "worker_class": worker_class,
        "workers": workers,
        "worker_connections": config["concurrency"],
        "backlog": config["backlog"] or 2048,
        "graceful_timeout": 1,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if worker_class == "gthread":
        options["threads"] = max(1, math.ceil(config["concurrency"] / workers))

    class Bench(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):  # in each worker, after the gevent worker patched: like plain gunicorn
            return load_app(config["app"], config["cwd"])

    report_ready(config, sock.getsockname()[1])
    Bench().run()


def serve_gevent_multi(config):
    """Pre-forked gevent workers sharing one listening socket: the post's "Ugly", no nginx."""
    import signal
    import socket

    sock = listen(socket, config["host"], config["port"], config["backlog"] or 128)
    children = []
    for _ in range(config["workers"]):
        pid = os.fork()
        if pid == 0:
            try:
                _gevent_worker(config, sock)
            finally:
                os._exit(1)
        children.append(pid)

    def stop(signum, frame):
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in children:  # reap them: orphans would linger as zombies
            try:
                os.waitpid(child, 0)
            except ChildProcessError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    report_ready(config, sock.getsockname()[1])
    while True:  # until SIGTERM; if bench dies, our supervisor ends the whole group
        signal.pause()


def _gevent_worker(config, listener):
    # Patch in the forked child, as gunicorn's gevent worker does.
    from gevent import monkey

    monkey.patch_all()
    import gevent.socket
    from gevent.pywsgi import WSGIServer

    sock = gevent.socket.socket(fileno=listener.detach())
    app = load_app(config["app"], config["cwd"])
    server = WSGIServer(sock, app, spawn=config["concurrency"], log=None)
    # No watch on the master: if it dies, our supervisor sees it exit and ends the group.
    server.serve_forever()


SERVERS = {
    "gevent": serve_gevent,
    "eventlet": serve_eventlet,
    "threaded": serve_threaded,
    "gunicorn-gevent": lambda config: serve_gunicorn(config, "gevent"),
    "gunicorn-gthread": lambda config: serve_gunicorn(config, "gthread"),
    "gevent-multi": serve_gevent_multi,
}


def main():
    config = json.loads(sys.argv[1])
    sys.stderr = _CappedStream(sys.stderr)
    if config.get("cpus"):
        os.sched_setaffinity(0, config["cpus"])  # inherited by forked workers
    SERVERS[config["kind"]](config)


if __name__ == "__main__":
    main()
