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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..errors import Nn2pgmError
from ..guard import allow_depth, stage, user_code
from ..source import Source, SourceError, refuse_meta
from ..source import error_line as _one_line
from ..source import meta_tensor as _meta_tensor


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"x=1,784"`` -> ``("x", (1, 784))``."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip() or not dims.strip():
        raise SourceError(f"bad --input-shape {text!r}: write NAME=D0,D1,... (e.g. x=1,784)")
    parts = [d.strip() for d in dims.split(",")]
    if not all(d.isascii() and d.isdigit() and len(d) <= 18 for d in parts):
        raise SourceError(f"bad --input-shape {text!r}: dimensions must be integers (e.g. x=1,784)")
    shape = check_shape(name.strip(), tuple(int(d) for d in parts), f"--input-shape {text!r}")
    return name.strip(), shape


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


def check_shape(name: Any, shape: Any, what: str) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints within the element budget, or SourceError."""
    if not isinstance(name, str) or not name.isidentifier():
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
            with user_code(f"calling example_inputs() of {spec}"):
                own = dict(module.example_inputs())
        except Nn2pgmError:
            raise
        except Exception as error:  # noqa: BLE001
            raise SourceError(f"{spec}: example_inputs() failed: {_one_line(error)}") from None
    arguments = forward_arguments(module)
    if shapes:
        for name, shape in shapes.items():
            check_shape(name, shape, f"input shape {name}={shape!r}")
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
) -> Source:
    """Resolve a SOURCE string into a module with example inputs (and trained weights)."""
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
        inputs = example_inputs(module, spec, input_shapes)
        name = spec.rpartition(":")[2]
    files = [spec if spec.endswith(".pt2") else spec.rpartition(":")[0]]
    if weights:
        load_weights(module, weights)
        files.append(weights)
    refuse_meta(module, name)
    return Source(module, inputs, spec, name, files=_resolved(files))


def _resolved(paths: list[str]) -> tuple[str, ...]:
    """The paths that name existing files, resolved (links followed)."""
    return tuple(str(Path(p).resolve()) for p in paths if p and Path(p).is_file())
