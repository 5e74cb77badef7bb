"""Where networks come from: ``path/file.py:Name``, ``package.module:Name`` or ``model.pt2``,
plus example inputs and trained weights. Every problem is a :class:`SourceError` whose message
is one line naming the problem and the fix."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..errors import Nn2pgmError


class SourceError(Nn2pgmError, ValueError):
    """The user's source, input shapes or weights are not usable; the message says the fix."""


@dataclass
class Source:
    """A network ready to trace: the module, its example inputs, where it came from."""

    module: torch.nn.Module
    example_inputs: dict[str, torch.Tensor]
    spec: str
    name: str
    input_ranges: dict[str, int] = field(default_factory=dict)
    onnx: Any = None  # an ONNX file's loaded model (then ``module`` is None)
    # Every file the source was read from (model file, weights, external data), resolved:
    # outputs may never be written over them.
    files: tuple[str, ...] = ()


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"x=1,784"`` -> ``("x", (1, 784))``."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip() or not dims.strip():
        raise SourceError(f"bad --input-shape {text!r}: write NAME=D0,D1,... (e.g. x=1,784)")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise SourceError(
            f"bad --input-shape {text!r}: dimensions must be integers (e.g. x=1,784)"
        ) from None
    if any(d <= 0 for d in shape):
        raise SourceError(f"bad --input-shape {text!r}: dimensions must be positive")
    count = 1
    for d in shape:
        count *= d
    limits.check_elements(
        f"--input-shape {text!r}", count, "give a smaller example, or raise --max-elements"
    )
    return name.strip(), shape


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
            raise SourceError(f"no such file: {target} (source {spec!r})")
        module_name = f"_nn2pgm_source_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise SourceError(f"{target} is not a Python file: give path/file.py:Name")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            with _on_path(str(path.resolve().parent)):
                loader_spec.loader.exec_module(module)
        except SyntaxError as error:
            raise SourceError(
                f"{target} is not valid Python (line {error.lineno}): {error.msg}"
            ) from None
        except Exception as error:  # noqa: BLE001 - user code may raise anything
            raise SourceError(f"importing {target} failed: {_one_line(error)}") from None
    else:
        try:
            with _on_path(os.getcwd()):
                module = importlib.import_module(target)
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
        module = obj()
    except TypeError as error:
        raise SourceError(
            f"cannot build {spec} with no arguments ({_one_line(error)}): give a function "
            "with no arguments that returns the module"
        ) from None
    except Exception as error:  # noqa: BLE001
        raise SourceError(f"building {spec} failed: {_one_line(error)}") from None
    if not isinstance(module, torch.nn.Module):
        raise SourceError(f"{spec} returned a {type(module).__name__}, not an nn.Module")
    return module


def forward_arguments(module: torch.nn.Module) -> list[str]:
    """Names of the positional/keyword arguments of ``module.forward``."""
    params = inspect.signature(module.forward).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds]


def _required_arguments(module: torch.nn.Module) -> list[str]:
    params = inspect.signature(module.forward).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def example_inputs(
    module: torch.nn.Module, spec: str, shapes: dict[str, tuple[int, ...]] | None
) -> dict[str, torch.Tensor]:
    """Example inputs from ``--input-shape`` or the module's own ``example_inputs()``."""
    own: dict[str, torch.Tensor] = {}
    if callable(getattr(module, "example_inputs", None)):
        try:
            own = dict(module.example_inputs())
        except Exception as error:  # noqa: BLE001
            raise SourceError(f"{spec}: example_inputs() failed: {_one_line(error)}") from None
    arguments = forward_arguments(module)
    if shapes:
        for name in shapes:
            if name not in arguments:
                raise SourceError(
                    f"--input-shape {name}=...: forward() of {spec} has no argument {name!r} "
                    f"(arguments: {', '.join(arguments) or 'none'})"
                )
        inputs = {}
        for name, shape in shapes.items():
            like = own.get(name)
            if like is not None and not like.is_floating_point():
                inputs[name] = torch.zeros(shape, dtype=like.dtype)
            else:
                inputs[name] = torch.rand(shape)
        own = {**{k: v for k, v in own.items() if k in arguments}, **inputs}
    if not own:
        example = ",".join(arguments[:1]) or "x"
        raise SourceError(
            f"no example inputs for {spec}: pass --input-shape {example}=1,... or define "
            "example_inputs() on the module"
        )
    missing = [a for a in _required_arguments(module) if a not in own]
    if missing:
        raise SourceError(
            f"no example input for forward argument(s) {', '.join(missing)} of {spec}: "
            f"pass --input-shape {missing[0]}=..."
        )
    for name, value in own.items():
        if not isinstance(value, torch.Tensor):
            raise SourceError(f"example input {name!r} of {spec} is not a tensor")
    return {a: own[a] for a in arguments if a in own}


def load_weights(module: torch.nn.Module, path: str) -> None:
    """Load a ``state_dict`` (``torch.save``, read with ``weights_only=True``) or safetensors."""
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"no such weights file: {path}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise SourceError(
            f"cannot read weights {path}: {_one_line(error)} (expected a state_dict saved "
            "with torch.save, or a .safetensors file)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"{path} is not a state_dict (a mapping of names to tensors)")
    result = module.load_state_dict(state, strict=False)
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
) -> Source:
    """Resolve a SOURCE string into a module with example inputs (and trained weights)."""
    if structure_only and not spec.endswith(".onnx"):
        raise SourceError(f"--structure-only applies to .onnx files, not {spec}")
    if spec.endswith(".pt2") and ":" not in spec:
        module, inputs = load_exported_program(spec)
        name = Path(spec).stem
        if input_shapes:
            raise SourceError(f"{spec} fixes its own input shapes: drop --input-shape")
    elif spec.endswith(".onnx"):
        from .onnx_model import load_onnx_source

        if weights:
            raise SourceError(f"{spec} carries its own weights: drop --weights")
        return load_onnx_source(spec, input_shapes=input_shapes, structure_only=structure_only)
    elif ":" not in spec:
        if Path(spec).exists():
            raise SourceError(
                f"{spec} is not a model source: give model.pt2, path/file.py:Name or "
                "package.module:Name"
            )
        raise SourceError(f"no such file: {spec}")
    else:
        module = build_module(spec)
        inputs = example_inputs(module, spec, input_shapes)
        name = spec.rpartition(":")[2]
    files = [spec if spec.endswith(".pt2") else spec.rpartition(":")[0]]
    if weights:
        load_weights(module, weights)
        files.append(weights)
    return Source(module, inputs, spec, name, files=_resolved(files))


def _resolved(paths: list[str]) -> tuple[str, ...]:
    """The paths that name existing files, resolved (links followed)."""
    return tuple(str(Path(p).resolve()) for p in paths if p and Path(p).is_file())


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
