"""Package exports resolved on first use (PEP 562), so that importing a package, or one of its light
modules, never pulls in torch (`paretoalign --help` builds its parser from config modules beside them)."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(namespace: dict, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``namespace`` (the package's ``globals()``): ``name`` is imported from
    ``exports[name]`` (a module path) when first asked for, then kept in the namespace."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return __getattr__
