"""Tables keyed by module type: what the library knows of a type, found through its base classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def qualified_name(cls: type) -> str:
    """``"module.QualName"``: how the tables name another package's type, which is known without importing it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def by_type(module: nn.Module, *tables: Mapping[Any, Any]) -> Any:
    """The entry of ``tables`` for ``module``'s class or its nearest base class, keyed by the class itself or by
    its :func:`qualified_name`; the first table wins for one class. ``None`` where no table has one."""
    for cls in type(module).__mro__:
        for table in tables:
            found = table.get(cls, table.get(qualified_name(cls)))
            if found is not None:
                return found
    return None
