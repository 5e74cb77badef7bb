"""Where networks come from: ``path/file.py:Name``, ``package.module:Name`` or ``model.pt2``,
plus example inputs and trained weights. Every problem is a :class:`SourceError` whose message
is one line naming the problem and the fix."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..errors import Nn2pgmError
from ..guard import allow_depth, stage, user_code
from ..source import Source, SourceError
from ..source import error_line as _one_line
from ..source import meta_tensor as _meta_tensor

# The dtypes --input-shape takes, with the exclusive bound of each integer one.
DTYPES = {
    "float32": None,
    "float64": None,
    "float16": None,
    "bfloat16": None,
    "int64": 2**63,
    "int32": 2**31,
    "int16": 2**15,
    "int8": 2**7,
    "uint8": 2**8,
    "bool": None,
}
SPEC = "NAME=D0,D1,...[:DTYPE[:<HIGH]] (e.g. x=1,784 or input_ids=2,16:int64:<50257)"


class InputShape(tuple):
    """A shape from ``--input-shape``, with its dtype and, for an integer input, the exclusive
    bound ``high`` of its values (drawn in ``[0, high)``), when given."""

    def __new__(cls, dims: Any, dtype: str | None = None, high: int | None = None):
        shape = super().__new__(cls, dims)
        shape.dtype, shape.high = dtype, high
        return shape

    def __reduce__(self):
        return (InputShape, (tuple(self), self.dtype, self.high))


def parse_input_shape(text: str) -> tuple[str, InputShape]:
    """``"x=1,784"`` -> ``("x", (1, 784))``; ``"ids=2,16:int64:<100"`` also sets the
    shape's ``dtype`` (``"int64"``) and ``high`` (100)."""
    name, sep, rest = text.partition("=")
    dims, *extra = rest.split(":")
    name = name.strip()
    if not sep or not name or not dims.strip() or len(extra) > 2:
        raise SourceError(f"bad --input-shape {text!r}: write {SPEC}")
    parts = [d.strip() for d in dims.split(",")]
    if not all(d.isascii() and d.isdigit() and len(d) <= 18 for d in parts):
        raise SourceError(f"bad --input-shape {text!r}: dimensions must be integers (e.g. x=1,784)")
    dtype = extra[0].strip().lower() if extra else None
    if dtype is not None and dtype not in DTYPES:
        raise SourceError(
            f"bad --input-shape {text!r}: unknown dtype {extra[0]!r}: use one of "
            f"{', '.join(DTYPES)} (e.g. mask=2,16:bool)"
        )
    limit = DTYPES.get(dtype or "")
    high = None
    if len(extra) == 2:
        bound = extra[1].strip()
        if limit is None:
            raise SourceError(
                f"bad --input-shape {text!r}: a range <HIGH is for integer dtypes (e.g. "
                f"{name}={dims}:int64:<100)"
            )
        digits = bound[1:].strip()
        if not bound.startswith("<") or not (digits.isascii() and digits.isdigit()):
            raise SourceError(
                f"bad --input-shape {text!r}: write the range as <HIGH, values in [0, HIGH) "
                f"(e.g. {name}={dims}:{dtype}:<100)"
            )
        high = int(digits[:20])
        if not 0 < high <= limit:
            raise SourceError(
                f"bad --input-shape {text!r}: HIGH must be between 1 and {limit} for {dtype}"
            )
    elif limit is not None:
        raise SourceError(
            f"bad --input-shape {text!r}: give the range of an integer input, values in "
            f"[0, HIGH): {name}={dims}:{dtype}:<HIGH"
        )
    shape = check_shape(name, tuple(int(d) for d in parts), f"--input-shape {text!r}")
    return name, InputShape(shape, dtype, high)


def parse_input_shapes(texts: list[str]) -> dict[str, tuple[int, ...]]:
    """Every ``--input-shape NAME=...`` once: a repeated NAME is refused, not overwritten."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, shape = parse_input_shape(text)
        if name in shapes:
            given = ",".join(map(str, shapes[name]))
            raise SourceError(
                f"--input-shape {name}=... given twice ({name}={given} and {text}): give each "
                "input once"
            )
        shapes[name] = shape
    return shapes


def _input_name(name: Any) -> bool:
    """``x``, or a leaf of a tuple or dict argument: ``state.0``, ``features.ids``."""
    if not isinstance(name, str):
        return False
    head, *path = name.split(".")
    return head.isidentifier() and all(p.isidentifier() or p.isdigit() for p in path)


def check_shape(name: Any, shape: Any, what: str) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints within the element budget, or SourceError."""
    if not _input_name(name):
        raise SourceError(f"bad input name {name!r} in {what}: give a forward argument name")
    if not isinstance(shape, (tuple, list)) or not shape:
        raise SourceError(f"bad {what}: give the shape as positive integers, batch first")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise SourceError(f"bad {what}: dimensions must be integers (e.g. x=1,784)")
    if any(d <= 0 for d in shape):
        raise SourceError(f"bad {what}: dimensions must be positive")
    count = 1
    for d in shape:
        count *= d
    limits.check_elements(what, count, "give a smaller example, or raise --max-elements")
    return tuple(shape)


def _path_text(path: Any, what: str) -> str:
    """``path`` as a string that can name a file, or SourceError naming it in one line."""
    if not isinstance(path, (str, os.PathLike)):
        raise SourceError(f"bad {what} {path!r}: give a path")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise SourceError(f"bad {what} {text!r}: give the path as text")
    if "\0" in text:
        raise SourceError(f"bad {what} {text!r}: a path cannot contain a NUL byte")
    return text


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _import_object(spec: str) -> Any:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise SourceError(
            f"bad source {spec!r}: use path/file.py:Name, package.module:Name or model.pt2"
        )
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise SourceError(f"no such file: {_shown(target)} (source {spec!r})")
        module_name = f"_nn2pgm_source_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise SourceError(f"{target} is not a Python file: give path/file.py:Name")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            with user_code(f"importing {target}"), _on_path(str(path.resolve().parent)):
                loader_spec.loader.exec_module(module)
        except SyntaxError as error:
            line = f" (line {error.lineno})" if error.lineno else ""
            raise SourceError(f"{target} is not valid Python{line}: {error.msg}") from None
        except Nn2pgmError:
            raise
        except Exception as error:  # noqa: BLE001 - user code may raise anything
            raise SourceError(f"importing {target} failed: {_one_line(error)}") from None
    else:
        try:
            with user_code(f"importing {target}"), _on_path(os.getcwd()):
                module = importlib.import_module(target)
        except Nn2pgmError:
            raise
        except ModuleNotFoundError as error:
            raise SourceError(
                f"cannot import {target!r} ({_one_line(error)}): give path/file.py:Name "
                "or install the package"
            ) from None
        except Exception as error:  # noqa: BLE001
            raise SourceError(f"importing {target} failed: {_one_line(error)}") from None
    if not hasattr(module, name):
        names = sorted(
            k
            for k, v in vars(module).items()
            if isinstance(v, type)
            and issubclass(v, torch.nn.Module)
            and not k.startswith("_")
            and v.__module__ == module.__name__
        )
        hint = f" (modules there: {', '.join(names)})" if names else ""
        raise SourceError(f"{target} has no {name!r}{hint}")
    return getattr(module, name)


def build_module(spec: str) -> torch.nn.Module:
    """Import ``spec`` and build the module: a class called with no arguments or a function
    returning a module."""
    obj = _import_object(spec)
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise SourceError(f"{spec} is a {type(obj).__name__}, not an nn.Module class or function")
    if inspect.isclass(obj) and not issubclass(obj, torch.nn.Module):
        raise SourceError(f"{spec} is a class but not an nn.Module subclass")
    try:
        with user_code(f"building {spec}"):
            module = obj()
    except Nn2pgmError:
        raise
    except TypeError as error:
        raise SourceError(
            f"cannot build {spec} with no arguments ({_one_line(error)}): give a function "
            "with no arguments that returns the module"
        ) from None
    except Exception as error:  # noqa: BLE001
        raise SourceError(f"building {spec} failed: {_one_line(error)}") from None
    if not isinstance(module, torch.nn.Module):
        raise SourceError(f"{spec} returned a {type(module).__name__}, not an nn.Module")
    allow_depth(module, spec)
    return module


def _parameters(module: torch.nn.Module) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return []


def forward_arguments(module: torch.nn.Module) -> list[str]:
    """Names of the arguments of ``module.forward`` (a ``*args`` one included)."""
    skip = (inspect.Parameter.VAR_KEYWORD,)
    return [p.name for p in _parameters(module) if p.kind not in skip]


def _takes_any_keyword(module: torch.nn.Module) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _parameters(module))


def _required_arguments(module: torch.nn.Module) -> list[str]:
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in _parameters(module)
        if p.kind not in kinds and p.default is inspect.Parameter.empty
    ]


def _by_name(module: torch.nn.Module, spec: str, given: Any) -> dict[str, Any]:
    """Example inputs by argument name: a dict as it is, ``(args, kwargs)`` bound to
    ``forward``'s parameters (positional ones past the named ones go to its ``*args``)."""
    if isinstance(given, Mapping):
        return dict(given)
    if not (
        isinstance(given, tuple)
        and len(given) == 2
        and isinstance(given[0], (tuple, list))
        and isinstance(given[1], Mapping)
    ):
        raise SourceError(
            f"{spec}: example_inputs() returned a {type(given).__name__}: return "
            "{argument name: tensor} or (args tuple, kwargs dict)"
        )
    args, kwargs = given
    params = _parameters(module)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in params if p.kind in kinds]
    star = [p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL]
    named: dict[str, Any] = dict(zip(positional, args))
    if len(args) > len(positional):
        if not star:
            raise SourceError(
                f"{spec}: example_inputs() gives {len(args)} positional inputs, forward() "
                f"takes {len(positional)} ({', '.join(positional) or 'none'})"
            )
        named[star[0]] = tuple(args[len(positional) :])
    twice = sorted(set(named) & set(kwargs))
    if twice:
        raise SourceError(f"{spec}: example_inputs() gives {twice[0]!r} by position and by name")
    return {**named, **kwargs}


def _flatten(name: str, value: Any, spec: str, out: dict[str, torch.Tensor]) -> None:
    """One entry per tensor leaf: ``state.0``, ``state.1``; ``features.ids``."""
    if isinstance(value, torch.Tensor):
        out[name] = value
    elif isinstance(value, (tuple, list)) and value and not hasattr(value, "_fields"):
        for i, item in enumerate(value):
            _flatten(f"{name}.{i}", item, spec, out)
    elif isinstance(value, Mapping) and value:
        for key, item in value.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise SourceError(
                    f"example input {name!r} of {spec} has the key {key!r}: the keys of a "
                    "dict of tensors must be names"
                )
            _flatten(f"{name}.{key}", item, spec, out)
    else:
        what = "an empty " if isinstance(value, (tuple, list, Mapping)) else "a "
        raise SourceError(
            f"example input {name!r} of {spec} is not a tensor ({what}"
            f"{type(value).__name__}): give tensors, or tuples, lists or dicts of them"
        )


def _made(shape: tuple[int, ...], like: torch.Tensor | None) -> torch.Tensor:
    """An example of ``shape`` (an :class:`InputShape` names its dtype and range)."""
    dtype, high = getattr(shape, "dtype", None), getattr(shape, "high", None)
    shape = tuple(shape)
    if dtype == "bool":
        return torch.ones(shape, dtype=torch.bool)  # a mask that keeps everything
    if high is not None:
        generator = torch.Generator().manual_seed(0)  # the same example every run
        return torch.randint(0, high, shape, generator=generator, dtype=getattr(torch, dtype))
    if dtype is not None:
        return torch.rand(shape, dtype=getattr(torch, dtype))
    if like is not None and not like.is_floating_point():
        return torch.zeros(shape, dtype=like.dtype)
    return torch.rand(shape)


def example_inputs(
    module: torch.nn.Module,
    spec: str,
    shapes: dict[str, tuple[int, ...]] | None,
    given: Any = None,
    *,
    required: bool = True,
) -> dict[str, torch.Tensor]:
    """Example inputs, one tensor per leaf (``x``, ``state.0``, ...), from ``--input-shape``,
    from ``given`` or from the module's own ``example_inputs()``: ``{argument: value}`` or
    ``(args, kwargs)``, a value being a tensor, ``None`` (the argument left at its default)
    or a tuple, list or dict of tensors. Without ``required``, none at all is ``{}``."""
    if given is None and callable(getattr(module, "example_inputs", None)):
        try:
            with user_code(f"calling example_inputs() of {spec}"):
                given = module.example_inputs()
        except Nn2pgmError:
            raise
        except Exception as error:  # noqa: BLE001
            raise SourceError(f"{spec}: example_inputs() failed: {_one_line(error)}") from None
    own: dict[str, torch.Tensor] = {}
    for name, value in _by_name(module, spec, {} if given is None else given).items():
        if value is not None:
            _flatten(name, value, spec, own)
    arguments = forward_arguments(module)
    known = set(arguments)
    if shapes:
        for name, shape in shapes.items():
            check_shape(name, shape, f"input shape {name}={shape!r}")
            top = name.split(".")[0]
            if top not in known and not _takes_any_keyword(module):
                raise SourceError(
                    f"--input-shape {name}=...: forward() of {spec} has no argument {top!r} "
                    f"(arguments: {', '.join(arguments) or 'none'})"
                )
        made = {name: _made(shape, own.get(name)) for name, shape in shapes.items()}
        own = {k: v for k, v in own.items() if not any(_overlap(k, n) for n in shapes)}
        own.update(made)
    if not own and not required:
        return {}
    if not own:
        example = ",".join(arguments[:1]) or "x"
        raise SourceError(
            f"no example inputs for {spec}: pass --input-shape {example}=1,... or define "
            "example_inputs() on the module"
        )
    tops = {k.split(".")[0] for k in own}
    missing = [a for a in _required_arguments(module) if a not in tops]
    if missing:
        raise SourceError(
            f"no example input for forward argument(s) {', '.join(missing)} of {spec}: "
            f"pass --input-shape {missing[0]}=..."
        )
    unknown = sorted(t for t in tops if t not in known)
    if unknown and not _takes_any_keyword(module):
        raise SourceError(
            f"example input {unknown[0]!r} of {spec}: forward() has no such argument "
            f"(arguments: {', '.join(arguments) or 'none'})"
        )
    order = {a: i for i, a in enumerate(arguments)}
    return dict(sorted(own.items(), key=lambda kv: order.get(kv[0].split(".")[0], len(order))))


def _overlap(a: str, b: str) -> bool:
    """``a`` and ``b`` name the same input, or one holds the other (``state``, ``state.0``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def fed_inputs(module: torch.nn.Module, spec: str, value: torch.Tensor) -> dict[str, Any]:
    """``value`` (a generator's sample) as the example of ``module``'s one input."""
    names = _required_arguments(module) or forward_arguments(module)[:1]
    if len(names) != 1:
        raise SourceError(
            f"{spec} takes {len(names)} inputs ({', '.join(names) or 'none'}): a generator's "
            "sample can feed only one; define example_inputs() on it"
        )
    return {names[0]: value}


def load_weights(module: torch.nn.Module, path: str) -> None:
    """Load a ``state_dict`` (``torch.save``, read with ``weights_only=True``) or safetensors."""
    path = _path_text(path, "weights file")
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"no such weights file: {_shown(path)}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise SourceError(_unpickling_message(path, error)) from None
    except Exception as error:  # noqa: BLE001
        raise SourceError(
            f"cannot read weights {_shown(path)}: {_torch_message(error)} (expected a "
            "state_dict saved with torch.save, or a .safetensors file)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"{path} is not a state_dict (a mapping of names to tensors)")
    expected = module.state_dict(keep_vars=True)
    wrong = [
        (key, list(value.shape), list(expected[key].shape))
        for key, value in state.items()
        if isinstance(expected.get(key), torch.Tensor) and value.shape != expected[key].shape
    ]
    if wrong:
        key, given, want = wrong[0]
        others = f" (and {len(wrong) - 1} other tensor(s) of the wrong shape)" if wrong[1:] else ""
        raise SourceError(
            f"weights {_shown(path)} do not fit the model: {key} has shape {given} in the file, "
            f"the model expects {want}{others}: save model.state_dict() of the same "
            "architecture"
        )
    meta = _meta_tensor(module) is not None  # values to place, not to copy into
    try:
        with user_code(f"loading weights {path}"):
            result = module.load_state_dict(state, strict=False, assign=meta)
    except Nn2pgmError:
        raise
    except RuntimeError as error:
        raise SourceError(
            f"weights {_shown(path)} do not fit the model: {_torch_message(error)}"
        ) from None
    problems = []
    if result.missing_keys:
        problems.append("missing keys: " + ", ".join(result.missing_keys[:5]))
    if result.unexpected_keys:
        problems.append("unexpected keys: " + ", ".join(result.unexpected_keys[:5]))
    if problems:
        raise SourceError(
            f"weights {path} do not fit the model ({'; '.join(problems)}): save "
            "model.state_dict() of the same architecture"
        )


def _unpickling_message(path: str, error: BaseException) -> str:
    """One line for torch's tensors-only unpickler refusing a file (never its advice to
    retry with ``weights_only=False``)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found or "allowlisted" in text or "Unsupported class" in text:
        what = f" ({found.group(1)})" if found else ""
        return (
            f"weights {_shown(path)} hold pickled Python objects{what}: nn2pgm reads only "
            "tensors and refuses them; save model.state_dict() with torch.save, or use a "
            ".safetensors file"
        )
    return (
        f"cannot read weights {_shown(path)}: it is not a state_dict saved with torch.save "
        "(damaged or another format); give a torch.save file or a .safetensors file"
    )


def _torch_message(error: BaseException) -> str:
    """The first sentence of a torch error, without its C++ source location."""
    text = " ".join(str(error).split())
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
    text = re.sub(r"^Error\(s\) in loading state_dict for \w+:\s*", "", text)
    first = re.split(r"(?<=[.!])\s+(?=[A-Z])", text, maxsplit=1)[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _shown(path: str) -> str:
    """A path as it can be printed on one line (quoted when it holds control characters)."""
    return path if path.isprintable() else repr(path)


def load_exported_program(path: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A saved ``torch.export`` program as a module plus its example inputs: the archive is
    checked first (no native code, no unknown entries), then only tensors are unpickled. See
    :mod:`nn2pgm.frontends.pt2`."""
    from .pt2 import load_exported_program as load

    return load(path)


def load_source(
    spec: str,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    weights: str | None = None,
    structure_only: bool = False,
    inputs_required: bool = True,
) -> Source:
    """Resolve a SOURCE string into a module with example inputs (and trained weights);
    without ``inputs_required`` a module that has none gets ``{}`` (a discriminator, to be fed
    a generator's sample)."""
    spec = _path_text(spec, "source")
    if weights is not None:
        weights = _path_text(weights, "weights file")
    if structure_only and not spec.endswith(".onnx"):
        raise SourceError(f"--structure-only applies to .onnx files, not {spec}")
    if spec.endswith(".pt2") and ":" not in spec:
        with stage(f"loading {spec}"):
            module, inputs = load_exported_program(spec)
        name = Path(spec).stem
        if input_shapes:
            raise SourceError(f"{spec} fixes its own input shapes: drop --input-shape")
    elif spec.endswith(".onnx"):
        from .onnx import load_onnx_source

        if weights:
            raise SourceError(f"{spec} carries its own weights: drop --weights")
        with stage(f"loading {spec}"):
            return load_onnx_source(spec, input_shapes=input_shapes, structure_only=structure_only)
    elif ":" not in spec:
        if Path(spec).exists():
            raise SourceError(
                f"{spec} is not a model source: give model.pt2, path/file.py:Name or "
                "package.module:Name"
            )
        raise SourceError(f"no such file: {_shown(spec)}")
    else:
        module = build_module(spec)
        if weights:  # first: a weights problem is named even when the examples do not fit
            load_weights(module, weights)
        inputs = example_inputs(module, spec, input_shapes, required=inputs_required)
        name = spec.rpartition(":")[2]
    files = [spec if spec.endswith(".pt2") else spec.rpartition(":")[0]]
    if weights:
        if spec.endswith(".pt2") and ":" not in spec:
            load_weights(module, weights)
        files.append(weights)
    ranges = {k: v.high for k, v in (input_shapes or {}).items() if getattr(v, "high", None)}
    return Source(module, inputs, spec, name, input_ranges=ranges, files=_resolved(files))


def _resolved(paths: list[str]) -> tuple[str, ...]:
    """The paths that name existing files, resolved (links followed)."""
    return tuple(str(Path(p).resolve()) for p in paths if p and Path(p).is_file())
