"""Saved ``torch.export`` programs (``model.pt2``), read without running anything from the file.

``torch.export.load`` trusts its file: entries under ``data/aotinductor/`` are unpacked to
``/tmp/aotinductor_*`` (names with ``../`` land outside it) and the shared object among them is
``dlopen``-ed, so its constructor runs; the graph's symbolic shapes (``expr_str``) are parsed
with ``sympy.sympify``, which evaluates Python; a node's ``target`` may name any callable
reachable from ``torch`` (``torch.os.system``), which then runs when the graph does; and
pickled payloads are unpickled. So before torch sees the file, :func:`check_archive` reads the
zip directory itself and refuses, with one line naming the entry:

- unsafe names (absolute, ``..`` or ``.`` components, backslashes, drive letters, control
  characters), duplicate names, symbolic links, encrypted entries, entries outside one root
  folder, entries that overlap or lie beyond the end of the file, an archive whose directory
  torch's own zip reader sees differently;
- more than :data:`MAX_ENTRIES` entries, an entry whose declared size exceeds the byte budget of
  :mod:`nn2pgm.limits` (one tensor), more than :data:`MAX_ARCHIVE_BYTES` in all, an entry
  compressed more than :data:`MAX_COMPRESSION_RATIO` to one (``torch.export.save`` stores its
  entries uncompressed, so only a zip bomb has a high ratio);
- native code: anything under ``data/aotinductor/``, any ``.so``/``.cpp``/``.wrapper`` file,
  any entry whose bytes start like an ELF or Mach-O binary;
- pickled Python objects (``custom_obj_*``/``opaque_obj_*`` constants);
- any entry a plain ``torch.export.save`` archive does not hold (:data:`ALLOWED_ENTRIES`);
- in ``models/*.json``: a symbolic expression that is not the plain ``sympy`` form
  ``torch.export.save`` writes (see :func:`_check_expression`), a node target that is not a
  registered operator (``torch.ops.<ns>.<op>.<overload>``, a higher-order operator or one of
  torch's symbolic-shape operators), and the operators ``aten::save``/``aten::from_file``
  (they write or read files named in the graph).

Nothing is ever extracted to disk. Then :func:`load_exported_program` lets torch deserialize the
program with every unpickling routed to ``torch.load(weights_only=True)`` (tensors only) and the
AOTInductor loader disabled (a second line of defence), and builds the module without the
program's ``guards_code`` (Python source from the file that torch would ``exec``)."""

from __future__ import annotations

import ast
import json
import logging
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..errors import ResourceError
from ..source import SourceError
from ..source import error_line as _one_line
from .patches import Patcher

MAX_ENTRIES = 100_000
"""Entries one archive may hold (GPT-2 saved with ``torch.export.save`` holds about 160)."""

MAX_ARCHIVE_BYTES = 2**35
"""Declared uncompressed bytes of all entries together (32 GiB)."""

MAX_COMPRESSION_RATIO = 100
"""Declared size over compressed size of one compressed entry (deflate reaches ~1000:1 on
zeros; ``torch.export.save`` does not compress at all)."""

MAX_EXPRESSION_CHARS = 20_000
"""Length of one symbolic-shape expression (``expr_str``) in ``models/*.json``."""

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
ALLOWED_ENTRIES = tuple(
    re.compile(pattern)
    for pattern in (
        r"archive_format",
        r"archive_version",
        r"byteorder",
        r"\.data/version",
        r"\.data/serialization_id",
        rf"models/{_NAME}\.json",
        rf"data/sample_inputs/{_NAME}\.pt",
        rf"data/weights/{_NAME}_weights_config\.json",
        rf"data/constants/{_NAME}_constants_config\.json",
        r"data/weights/weight_[0-9]+",
        r"data/constants/tensor_[0-9]+",
        rf"extra/{_NAME}",
    )
)
"""What ``torch.export.save`` writes, below the archive's root folder: format markers, the
serialized graph per model, its example inputs, weight and constant configs, raw tensor
payloads, and ``extra_files`` (read as text)."""

_NATIVE_SUFFIXES = (".so", ".cpp", ".wrapper", ".o", ".dylib", ".dll", ".pyd", ".cubin")
_NATIVE_MAGIC = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)
_PICKLED_CONSTANT = re.compile(r"data/constants/(custom_obj_|opaque_obj_)")
_REFUSED_OPERATORS = frozenset({"aten::save", "aten::from_file"})
_FIX = "save the program with torch.export.save"
_NATIVE_FIX = "nn2pgm runs no code from a file; export without AOTInductor (torch.export.save)"


def _shown(name: str) -> str:
    """An entry name fit for one line of a message."""
    text = name if name.isprintable() else ascii(name)
    return text if len(text) <= 200 else text[:200] + "..."


def _unsafe(name: str) -> bool:
    if not name or not name.isprintable() or "\\" in name or name.startswith("/"):
        return True
    if re.match(r"[A-Za-z]:", name):
        return True
    return any(part in ("", ".", "..") for part in name.split("/"))


def check_archive(path: str) -> None:
    """Refuse ``path`` unless it is a plain ``torch.export.save`` archive (see the module)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as error:
        raise SourceError(
            f"{path} is not a saved torch.export program (not a .pt2 archive: {error})"
        ) from None
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror or error}") from None
    with archive:
        infos = archive.infolist()
        _check_directory(path, infos, Path(path).stat().st_size)
        for info in infos:
            _check_payload(path, archive, info)
        _check_same_view(path, infos)
        for info in infos:
            inner = info.filename.partition("/")[2]
            if re.fullmatch(rf"models/{_NAME}\.json", inner):
                _check_program(path, info.filename, archive.read(info))
            elif inner.startswith("data/sample_inputs/"):
                _check_nested(path, archive, info)


def _check_directory(path: str, infos: list[zipfile.ZipInfo], file_size: int) -> None:
    if not infos:
        raise SourceError(f"{path} is an empty zip archive, not a saved torch.export program")
    if len(infos) > MAX_ENTRIES:
        raise ResourceError(
            f"{path} holds {len(infos)} entries, more than the limit of {MAX_ENTRIES}: "
            f"not a saved torch.export program ({_FIX})"
        )
    root = infos[0].filename.partition("/")[0]
    _check_names(path, infos, root)
    # then what each entry is (a name that escapes is reported before what it holds)
    total = 0
    spans = []
    for info in infos:
        shown = _shown(info.filename)
        _check_kind(path, info.filename[len(root) + 1 :], shown)
        limits.check_bytes(f"{path} entry {shown}", info.file_size)
        total += info.file_size
        if total > MAX_ARCHIVE_BYTES:
            raise ResourceError(
                f"{path} declares more than {MAX_ARCHIVE_BYTES} bytes in all (at {shown}): "
                "not a usable model"
            )
        spans.append(_check_storage(path, info, shown, file_size))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise SourceError(
                f"{path} is a damaged zip archive (entries {first} and {second} overlap): {_FIX}"
            )


def _check_names(path: str, infos: list[zipfile.ZipInfo], root: str) -> None:
    """Every entry's name is safe, unique, inside ``root``, and no link or encrypted."""
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        shown = _shown(name)
        if _unsafe(name) or _unsafe(root):
            raise SourceError(f"{path} holds an entry with an unsafe name ({shown}): {_FIX}")
        if name in seen:
            raise SourceError(f"{path} holds the entry {shown} twice: {_FIX}")
        seen.add(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise SourceError(f"{path} holds a symbolic link ({shown}): {_FIX}")
        if info.flag_bits & 0x1:
            raise SourceError(f"{path} holds an encrypted entry ({shown}): {_FIX}")
        if not name.startswith(root + "/"):
            raise SourceError(f"{path} holds an entry outside its root folder ({shown}): {_FIX}")


def _check_kind(path: str, inner: str, shown: str) -> None:
    """The entry (``inner``: its name inside the root folder) is one torch.export.save
    writes: no native code, no pickled objects."""
    if inner.startswith("data/aotinductor/") or inner.endswith(_NATIVE_SUFFIXES):
        raise SourceError(f"{path} holds native code ({shown}): {_NATIVE_FIX}")
    if _PICKLED_CONSTANT.match(inner):
        raise SourceError(
            f"{path} holds pickled Python objects ({shown}); nn2pgm reads only tensors"
        )
    if not any(pattern.fullmatch(inner) for pattern in ALLOWED_ENTRIES):
        raise SourceError(
            f"{path} holds an entry torch.export.save does not write ({shown}): "
            f"nn2pgm reads only programs saved with torch.export.save"
        )


def _check_storage(
    path: str, info: zipfile.ZipInfo, shown: str, file_size: int
) -> tuple[int, int, str]:
    """The entry's compression is one torch reads and not a bomb, and it lies inside the
    file: its ``(start, end, shown name)`` in the file."""
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise SourceError(
                f"{path} is a damaged zip archive (entry {shown} declares {info.file_size} "
                f"bytes but stores {info.compress_size}): {_FIX}"
            )
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise ResourceError(
                f"{path} entry {shown} unpacks {info.compress_size} bytes to "
                f"{info.file_size}, more than {MAX_COMPRESSION_RATIO}:1 (a zip bomb?): {_FIX}"
            )
    else:
        raise SourceError(
            f"{path} entry {shown} uses a compression torch does not read "
            f"(method {info.compress_type}): {_FIX}"
        )
    # the local header (30 bytes + name + extra) and the data must lie inside the file
    start = info.header_offset
    end = start + 30 + len(info.filename.encode("utf-8")) + info.compress_size
    if start < 0 or end > file_size:
        raise SourceError(f"{path} is a damaged zip archive (entry {shown} lies beyond its end)")
    return start, end, shown


def _check_payload(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """The first bytes of every entry: no native binary hides under another name. Opening the
    entry also checks that its local header names the same file as the directory."""
    try:
        with archive.open(info) as entry:
            head = entry.read(4)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as error:
        raise SourceError(
            f"{path} is a damaged zip archive (entry {_shown(info.filename)}: {error}): {_FIX}"
        ) from None
    if head.startswith(_NATIVE_MAGIC):
        raise SourceError(f"{path} holds native code ({_shown(info.filename)}): {_NATIVE_FIX}")


def _check_same_view(path: str, infos: list[zipfile.ZipInfo]) -> None:
    """Torch reads the archive with its own zip reader (miniz): it must see the same entries
    of the same sizes, or a crafted directory could hide an entry from the checks above."""
    try:
        reader = torch._C.PyTorchFileReader(path)
        records = reader.get_all_records()
        sizes = {record: reader.get_record_size(record) for record in records}
    except RuntimeError as error:
        raise SourceError(
            f"{path} is a damaged zip archive (torch cannot read it: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'RuntimeError'})"
        ) from None
    ours = {info.filename.partition("/")[2]: info.file_size for info in infos}
    if sizes != ours:
        differing = sorted(set(sizes.items()) ^ set(ours.items()))
        shown = _shown(differing[0][0]) if differing else "?"
        raise SourceError(
            f"{path} is an ambiguous zip archive (torch's reader sees entry {shown} "
            f"differently): {_FIX}"
        )


def _check_nested(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Example inputs are themselves a ``torch.save`` zip: bound what they unpack to."""
    shown = _shown(info.filename)
    with archive.open(info) as entry:
        try:
            nested = zipfile.ZipFile(entry)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
            return  # not a zip (an old torch.save format): the tensors-only unpickler decides
        with nested:
            inner = nested.infolist()
    if len(inner) > MAX_ENTRIES:
        raise ResourceError(f"{path} entry {shown} holds {len(inner)} entries: {_FIX}")
    total = 0
    for item in inner:
        what = f"{path} entry {shown} (member {_shown(item.filename)})"
        limits.check_bytes(what, item.file_size)
        total += item.file_size
        ratio = item.file_size / max(item.compress_size, 1)
        if item.compress_type != zipfile.ZIP_STORED and ratio > MAX_COMPRESSION_RATIO:
            raise ResourceError(f"{what} is compressed more than {MAX_COMPRESSION_RATIO}:1: {_FIX}")
    if total > MAX_ARCHIVE_BYTES:
        raise ResourceError(f"{path} entry {shown} declares more than {MAX_ARCHIVE_BYTES} bytes")


# --- the serialized graph ------------------------------------------------------------------

# sympy classes ``srepr`` writes for shape expressions, and torch's own sympy functions
_SYMPY_CALLS = frozenset(
    """Symbol Integer Rational Float Add Mul Pow Max Min Abs floor ceiling Mod sign
    Equality Unequality StrictLessThan StrictGreaterThan LessThan GreaterThan Eq Ne Lt Le Gt Ge
    And Or Not Xor ITE Piecewise ExprCondPair Tuple
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift
    RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator
    TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity""".split()
)
_SYMPY_NAMES = frozenset({"true", "false", "oo", "zoo", "nan", "pi", "E"})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift"})
_SAFE_STRING = re.compile(r"[A-Za-z0-9_.+\-]{0,100}")
_MAX_LITERAL = 2**64
_MAX_EXPONENT = 64


def _check_expression(text: str) -> str | None:
    """Why ``text`` is not a plain sympy ``srepr`` shape expression (``None``: it is).

    Allowed: calls of the names above with literal or nested arguments, keyword arguments
    with literal values (``positive=True``), integers below 2**64, floats, short strings of
    letters, digits and ``_.+-`` (symbol names, float digits), the names in
    ``_SYMPY_NAMES``, unary minus; an exponent or shift given as a literal is at most 64.
    ``sympy.sympify`` evaluates anything else as Python."""
    if len(text) > MAX_EXPRESSION_CHARS:
        return f"longer than {MAX_EXPRESSION_CHARS} characters"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not an expression"
    stack: list[ast.AST] = [tree.body]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS:
                return "calls something other than a sympy constructor"
            if node.func.id in _POWERS and len(node.args) == 2:
                exponent = node.args[1]
                if isinstance(exponent, ast.Call) and exponent.args:
                    exponent = exponent.args[0]
                if isinstance(exponent, ast.UnaryOp):
                    exponent = exponent.operand
                if isinstance(exponent, ast.Constant) and isinstance(exponent.value, int):
                    if abs(exponent.value) > _MAX_EXPONENT:
                        return f"raises to a power above {_MAX_EXPONENT}"
            for keyword in node.keywords:
                if keyword.arg is None or not isinstance(keyword.value, ast.Constant):
                    return "passes a keyword argument that is not a literal"
                stack.append(keyword.value)
            stack.extend(node.args)
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str):
                if not _SAFE_STRING.fullmatch(value):
                    return "holds a string that is not a symbol name or a number"
            elif isinstance(value, bool) or value is None or isinstance(value, float):
                pass
            elif isinstance(value, int):
                if abs(value) >= _MAX_LITERAL:
                    return "holds an integer of 2**64 or more"
            else:
                return "holds a literal of another kind"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            stack.append(node.operand)
        elif isinstance(node, ast.Name):
            if node.id not in _SYMPY_NAMES:
                return f"names {node.id!r}"
        else:
            return f"uses Python syntax ({type(node).__name__})"
    return None


def _allowed_target(target: str) -> bool:
    """A node target torch resolves to a registered operator (never another callable)."""
    from torch._export.serde.serialize import _SYM_OPS

    parts = target.split(".")
    if not all(part.isidentifier() and not part.startswith("__") for part in parts):
        return False
    if parts[:2] == ["torch", "ops"] and len(parts) in (4, 5):
        resolved: Any = torch.ops
        rest = parts[2:]
    elif len(parts) == 2 and parts[0] in ("_operator", "math", "torch"):
        import math
        import operator

        resolved = {"_operator": operator, "math": math, "torch": torch}[parts[0]]
        rest = parts[1:]
    else:
        return False
    for part in rest:
        # attribute lookups only (torch.ops namespaces and packets resolve lazily); nothing
        # found by the lookup is ever called here
        try:
            resolved = getattr(resolved, part)
        except (AttributeError, RuntimeError):
            return False
    if isinstance(resolved, torch._ops.OpOverload):
        return resolved._schema.name not in _REFUSED_OPERATORS
    if isinstance(resolved, torch._ops.HigherOrderOperator):
        return True
    return len(parts) == 2 and any(resolved is op for op in _SYM_OPS)


def _check_program(path: str, name: str, data: bytes) -> None:
    shown = _shown(name)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise SourceError(f"{path} entry {shown} is not valid JSON: {_FIX}") from None
    stack: list[Any] = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            expression = value.get("expr_str")
            if isinstance(expression, str):
                problem = _check_expression(expression)
                if problem:
                    raise SourceError(
                        f"{path} entry {shown} holds a symbolic shape that is not a plain "
                        f"expression ({problem}: {_shown(expression)[:80]}): nn2pgm evaluates "
                        "no code from a file; " + _FIX
                    )
            target = value.get("target")
            if isinstance(target, str) and "inputs" in value and not _allowed_target(target):
                raise SourceError(
                    f"{path} entry {shown} calls {_shown(target)[:120]}, which is not a "
                    "registered torch operator (or one that reads or writes files): nn2pgm runs "
                    "no code from a file; " + _FIX
                )
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


# --- loading --------------------------------------------------------------------------------


def load_exported_program(path: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A saved ``torch.export`` program as a module plus its example inputs: the archive is
    checked first (:func:`check_archive`), then deserialized unpickling nothing but tensors."""
    import pickle

    from torch.export.pt2_archive import _package

    file = Path(path)
    if not file.is_file():
        raise SourceError(f"no such file: {path}")
    check_archive(path)

    def refuse(*_: Any, **__: Any) -> Any:
        raise SourceError(f"{path} holds pickled Python objects; nn2pgm reads only tensors")

    def no_native_code(*_: Any, **__: Any) -> Any:
        raise SourceError(f"{path} holds native code (AOTInductor): {_NATIVE_FIX}")

    no_pickle = type(
        "NoPickle",
        (),
        {
            "loads": staticmethod(refuse),
            **{k: getattr(pickle, k) for k in ("dumps", "HIGHEST_PROTOCOL")},
        },
    )
    logger = logging.getLogger("torch.export")
    with Patcher() as patcher:  # process-wide patches: one thread at a time, always undone
        original_load = torch.load

        def tensors_only(f: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["weights_only"] = True
            try:
                return original_load(f, *args, **kwargs)
            except pickle.UnpicklingError:
                # torch's message suggests weights_only=False: never repeat that to the user
                raise SourceError(
                    f"{path} holds pickled Python objects other than tensors; nn2pgm reads "
                    "only tensors"
                ) from None

        patcher.patch(torch, "load", tensors_only)
        patcher.patch(torch._C, "_pickle_load_obj", refuse)
        patcher.patch(_package, "_load_aoti", no_native_code)
        patcher.patch(_package, "pickle", no_pickle)
        level, logger.level = logger.level, logging.CRITICAL
        try:
            contents = _package.load_pt2(str(file))
        except SourceError:
            raise
        except Exception as error:  # noqa: BLE001 - torch's deserializer, fed the user's file
            raise SourceError(
                f"{path} is not a saved torch.export program ({_one_line(error)})"
            ) from None
        finally:
            logger.setLevel(level)
    program = contents.exported_programs.get("model")
    if program is None:
        raise SourceError(
            f"{path} holds no program named 'model': save it with torch.export.save(program, path)"
        )
    names = [
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind.name == "USER_INPUT"
    ]
    args, kwargs = program.example_inputs or ((), {})
    inputs = dict(zip(names, args))
    inputs.update(kwargs)
    if not inputs:
        raise SourceError(f"{path} carries no example inputs: re-export it with example args")
    # check_guards=False: the program's ``guards_code`` (strings from the file) would be
    # compiled with ``exec`` into a guard function; the range checks torch builds from the
    # numeric range constraints remain
    return program.module(check_guards=False), inputs
