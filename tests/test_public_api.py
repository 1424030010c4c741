"""The public API is exactly what `__all__` says (the httpx convention)."""

import patchaudit


def test_all_matches_public_names() -> None:
    public = {name for name in vars(patchaudit) if not name.startswith("_")}
    modules = {"rules", "static", "reporters", "data"}  # subpackages: reached, not exported
    assert set(patchaudit.__all__) == (public - modules) | {"__version__"}
    assert patchaudit.__all__ == sorted(patchaudit.__all__, key=str.casefold)


def test_all_names_resolve() -> None:
    for name in patchaudit.__all__:
        assert getattr(patchaudit, name) is not None
