"""The torch callables a program may name: a closed table, keyed by
``torch.overrides.resolve_name``.

Built from ``get_overridable_functions()`` and ``get_testing_overrides()`` (everything that
takes part in ``__torch_function__``, so everything a tracer can see) plus the factory functions
by name. Only the namespaces in ``NAMESPACES`` are kept and ``DENIED`` is dropped, so a document
can never reach ``torch.load``, ``torch.save``, ``torch.from_file``, ``torch.hub``,
``torch.ops.*``, ``os.*`` or a storage: a name is one dict lookup, never a ``getattr`` walk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import (
    get_ignored_functions,
    get_overridable_functions,
    get_testing_overrides,
    resolve_name,
)

NAMESPACES = {
    "torch",
    "torch.Tensor",
    "torch.nn.functional",
    "torch.special",
    "torch.linalg",
    "torch.fft",
    "torch.functional",
}
# Overridable, but they touch files, shared memory or storages, take Python callables, run
# autograd or read values out of the graph.
DENIED = {
    "torch.Tensor.storage",
    "torch.Tensor.untyped_storage",
    "torch.Tensor._typed_storage",
    "torch.Tensor.share_memory_",
    "torch.Tensor.__reduce_ex__",
    "torch.Tensor.__setstate__",
    "torch.Tensor._reduce_ex_internal",
    "torch.Tensor.apply_",
    "torch.Tensor.map_",
    "torch.Tensor.map2_",
    "torch.Tensor.register_hook",
    "torch.Tensor.register_post_accumulate_grad_hook",
    "torch.Tensor.backward",
    "torch.Tensor.numpy",
    "torch.Tensor.__array__",
    "torch.Tensor.__array_wrap__",
    "torch.Tensor.set_",
    "torch.Tensor.pin_memory",
    "torch.Tensor.__deepcopy__",
    "torch.Tensor._make_subclass",
    "torch.Tensor.data_ptr",
    "torch.from_file",
    "torch.Tensor.__torch_function__",
    "torch.Tensor.__torch_dispatch__",
    "torch.Tensor.requires_grad_",
    "torch.Tensor.retain_grad",
    "torch.Tensor.tolist",
    "torch.Tensor.item",
}
# Functions without a tensor argument that a tracer still sees (by name: the ignored set also
# holds torch.load, torch.save, torch.manual_seed, ...).
FACTORIES = {
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "range",
    "linspace",
    "logspace",
    "eye",
    "tensor",
    "as_tensor",
    "scalar_tensor",
    "empty_strided",
    "empty_permuted",
    "tril_indices",
    "triu_indices",
    "rand",
    "randn",
    "normal",
    "randint",
    "randperm",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand_like",
    "randn_like",
    "randint_like",
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
    "new_tensor",
    "new_empty_strided",
}


# Python methods of torch.Tensor that dispatch to __torch_function__ but are missing from
# get_overridable_functions() (torch._tensor defines them in Python).
PYTHON_METHODS = ("unflatten", "__rdiv__")


def _namespace(name: str) -> str:
    head, _, last = name.rpartition(".")
    if head.startswith("torch.Tensor.") and last in ("__get__", "__set__"):
        return "torch.Tensor"  # a property: torch.Tensor.T.__get__
    return head


def name_of(func: Callable[..., Any]) -> str | None:
    """The table key of ``func`` (``torch.nn.functional.linear``), or None."""
    try:
        return resolve_name(func)
    except Exception:  # noqa: BLE001 - resolve_name fails on some C functions
        return None


@functools.cache
def table() -> dict[str, Callable[..., Any]]:
    """Every op name a program may use -> its torch callable."""
    funcs = [f for fs in get_overridable_functions().values() for f in fs]
    funcs += list(get_testing_overrides())
    funcs += [getattr(torch.Tensor, name) for name in PYTHON_METHODS]
    funcs += [
        f for f in get_ignored_functions() if (name_of(f) or "").rpartition(".")[2] in FACTORIES
    ]
    found: dict[str, Callable[..., Any]] = {}
    for func in funcs:
        name = name_of(func)
        if name is None or name in DENIED or name.endswith(".__set__"):
            continue
        if _namespace(name) in NAMESPACES:
            found.setdefault(name, func)
    return found


def lookup(name: str) -> Callable[..., Any] | None:
    """The callable named ``name``, or None when it is not in the table."""
    return table().get(name)
