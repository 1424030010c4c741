"""The import recorder: a ``sys.meta_path[0]`` finder noting first imports, and post-import hooks.

It asks the remaining finders itself and returns their spec, which is what importlib would have
used anyway, so the origin is known without searching twice. The modules named in
:data:`POST_IMPORT_HOOKS` get their hook right after their body executes (the patch wrappers,
the zope.event subscriber, the DaemonContext wrapper).
"""

import sys

from . import _patches, _process_wrappers
from ._errors import emit_error
from ._events import emit
from ._frames import is_probe_or_importlib, module_name_of
from ._state import IMPORTLIB_UTIL, S, real_get_ident

POST_IMPORT_HOOKS = {}
POST_IMPORT_HOOKS.update(_patches.POST_IMPORT_HOOKS)
POST_IMPORT_HOOKS.update(_process_wrappers.POST_IMPORT_HOOKS)


class ImportRecorder:
    def __init__(self):
        self.found = set()
        self.missing = set()
        self.busy = set()  # thread idents inside find_spec (imports made by other finders)

    def find_spec(self, name, path=None, target=None):
        if name in sys.modules:
            return None
        ident = real_get_ident()
        if ident in self.busy:
            return None
        self.busy.add(ident)
        try:
            return self._find(name, path, target)
        finally:
            self.busy.discard(ident)

    def _find(self, name, path, target):
        (importer, line), lookup_only = _importer_of(sys._getframe(2))
        spec = None
        complete = True
        seen_self = False
        for finder in list(sys.meta_path):
            if not seen_self:
                seen_self = finder is self
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:  # a legacy finder: let importlib run the rest itself
                complete = False
                break
            spec = find(name, path, target)
            if spec is not None:
                break
        if lookup_only:
            return spec if complete else None
        if spec is not None:
            if name not in self.found:
                self.found.add(name)
                origin = spec.origin if getattr(spec, "has_location", False) else None
                self._record(name, importer, line, origin, True)
            if name in POST_IMPORT_HOOKS:
                _install_post_import_hook(name, spec)
        elif name not in self.missing and name not in self.found:
            self.missing.add(name)
            self._record(name, importer, line, None, False if complete else None)
        return spec if complete else None

    def _record(self, name, importer, line, origin, found):
        try:
            S.importers.setdefault(name, importer)
            if origin:
                S.import_files.setdefault(origin, name)
            emit(
                "import",
                module=name,
                importer=importer,
                line=line,  # the importer's line executing when the import started
                file=origin,
                phase="post-patch" if S.patched else "pre-patch",
                found=found,
            )
        except Exception:
            pass


def _importer_of(frame):
    """(importer module name, is_lookup_only) for an import whose machinery starts at frame."""
    lookup_only = False
    f = frame
    while f is not None:
        code = f.f_code
        filename = code.co_filename
        if is_probe_or_importlib(filename):
            if filename == IMPORTLIB_UTIL and code.co_name == "find_spec":
                lookup_only = True
            f = f.f_back
            continue
        return (module_name_of(f) or "<unknown>", f.f_lineno), lookup_only
    if S.mode == "run":  # no Python frame: the launcher imported it from C (uWSGI)
        return ("<launcher>", None), lookup_only
    return ("<target>" if S.importing_target else "<probe>", None), lookup_only


def _install_post_import_hook(name, spec):
    """Run the hook for ``name`` right after its module body executes."""
    loader = spec.loader
    if loader is None or isinstance(loader, type) or not hasattr(loader, "exec_module"):
        return  # class-level loaders are shared; apply_loaded_hooks() catches these later
    real_exec = loader.exec_module

    def exec_module(module):
        try:
            del loader.exec_module  # one-shot: the loader object may be shared (zipimport)
        except AttributeError:
            pass
        real_exec(module)
        if getattr(module, "__name__", None) == name:
            _run_hook(name, module)

    try:
        loader.exec_module = exec_module
    except (AttributeError, TypeError):
        pass


def _run_hook(name, module):
    if name in S.hooked:
        return
    S.hooked.add(name)
    try:
        POST_IMPORT_HOOKS[name](module)
    except Exception as exc:
        emit_error(exc, "startup")


def apply_loaded_hooks() -> None:
    """Hook modules that were loaded without our loader wrapper (already imported, zip, ...)."""
    for name in POST_IMPORT_HOOKS:
        module = sys.modules.get(name)
        if module is not None and name not in S.hooked:
            _run_hook(name, module)


def install_recorder() -> None:
    """The recorder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, ImportRecorder) for f in sys.meta_path):
        sys.meta_path.insert(0, ImportRecorder())


def uninstall_recorder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, ImportRecorder)]


def record_file_import(name, path, importer, found=True, phase=None):
    """A module run by path rather than imported (the target file, gunicorn's config, the
    script the interpreter ran): recorded like an import, so that the imports its code makes
    are placed at its lines and a syntax error in it is named."""
    S.importers.setdefault(name, importer)
    S.import_files.setdefault(path, name)
    if phase is None:
        phase = "post-patch" if S.patched else "pre-patch"
    emit("import", module=name, importer=importer, line=None, file=path, phase=phase, found=found)
