"""The public API is exactly what `__all__` says (the httpx convention)."""

import types

import patchaudit


def test_all_matches_public_names() -> None:
    # Submodules show up as attributes once something imports them; they are reached by their
    # own import path, not exported.
    public = {
        name
        for name, value in vars(patchaudit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(patchaudit.__all__) == public | {"__version__"}
    assert patchaudit.__all__ == sorted(patchaudit.__all__, key=str.casefold)


def test_all_names_resolve() -> None:
    for name in patchaudit.__all__:
        assert getattr(patchaudit, name) is not None
