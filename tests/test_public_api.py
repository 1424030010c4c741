"""The public API is exactly what `__all__` says (the httpx convention), loaded lazily."""

import subprocess
import sys
import types

import patchaudit


def test_all_matches_public_names() -> None:
    # Submodules show up as attributes once something imports them; they are reached by their
    # own import path, not exported.
    public = {
        name
        for name in dir(patchaudit)
        if not name.startswith("_") and not isinstance(getattr(patchaudit, name), types.ModuleType)
    }
    assert set(patchaudit.__all__) == public | {"__version__"}
    assert patchaudit.__all__ == sorted(patchaudit.__all__, key=str.casefold)


def test_all_names_resolve() -> None:
    for name in patchaudit.__all__:
        assert getattr(patchaudit, name) is not None


def test_importing_the_package_is_light() -> None:
    # Every pytest run loads the plugin, which imports this package: no gevent, no rules.
    heavy = "('gevent', 'eventlet', 'patchaudit.rules', 'rich')"
    code = f"import sys, patchaudit; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
