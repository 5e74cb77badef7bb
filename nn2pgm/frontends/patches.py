"""Scoped patches of process-wide objects, as ``torch.fx``'s ``_Patcher`` does them.

The tracer replaces ``torch.nn.Module.__call__`` while it records a forward pass, and the
``.pt2`` loader replaces ``torch.load`` and torch's pickle hooks while it reads an archive. Such
a change is seen by every thread of the process, so it goes through one :class:`Patcher`:

- ``with Patcher() as patcher: patcher.patch(owner, "name", value)`` records each patch and
  undoes all of them, last first, when the block ends, also after an exception;
- one process-wide (re-entrant) lock is held for the whole block, so two threads that patch
  run one after the other instead of undoing each other's patches.

>>> import math
>>> with Patcher() as patcher:
...     patcher.patch(math, "pi", 3)
...     math.pi
3
>>> math.pi
3.141592653589793
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.RLock()
_MISSING = object()


class Patcher:
    """Patches of attributes of modules and classes, undone when the ``with`` block ends."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []
        self._entered = False

    def __enter__(self) -> Patcher:
        _LOCK.acquire()
        self._entered = True
        return self

    def patch(self, owner: Any, name: str, value: Any) -> None:
        """Set ``owner.name = value`` until the block ends (``owner``'s own attribute is
        restored; one it inherited is deleted again)."""
        if not self._entered:
            raise RuntimeError("Patcher.patch outside of its with block")
        self._saved.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, value)

    def __exit__(self, *exc: Any) -> None:
        try:
            while self._saved:
                owner, name, old = self._saved.pop()
                if old is _MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, old)
        finally:
            self._entered = False
            _LOCK.release()
