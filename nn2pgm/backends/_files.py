"""Writing output files so that a reader never sees a partial file, and nothing that must be
kept is replaced.

An output path may name a missing file or a regular file, never a directory, device, FIFO or
socket, and never a file the conversion read (``protect``: the model's source, its weights,
its external data; compared after resolving links, and by ``os.path.samefile`` so that a hard
link counts too). A symbolic link is followed: the file it points to is replaced atomically
and the link stays.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable

from ..errors import Nn2pgmError

Paths = Iterable[str | os.PathLike[str]]


class OutputError(Nn2pgmError, OSError):
    """An output file cannot be written where the user asked."""


_KINDS = (
    (stat.S_ISDIR, "a directory", "give a file name inside it, e.g. {out}/model.json"),
    (stat.S_ISCHR, "a device", "give a regular file"),
    (stat.S_ISBLK, "a device", "give a regular file"),
    (stat.S_ISFIFO, "a FIFO", "give a regular file"),
    (stat.S_ISSOCK, "a socket", "give a regular file"),
)


def check_output(path: str | os.PathLike[str], protect: Paths = ()) -> None:
    """Raise :class:`OutputError` unless a file may be written at ``path``: missing or a
    regular file (links followed), and none of the ``protect`` files."""
    out = os.fspath(path)
    info = _stat(out)
    _check_protected(out, info, protect)
    if info is None or stat.S_ISREG(info.st_mode):
        return
    for test, kind, fix in _KINDS:
        if test(info.st_mode):
            raise OutputError(f"cannot write {out}: it is {kind}; {fix.format(out=out)}")
    raise OutputError(f"cannot write {out}: it is not a regular file; give a regular file")


def check_output_directory(
    path: str | os.PathLike[str], names: Iterable[str], protect: Paths = ()
) -> None:
    """Raise :class:`OutputError` unless the files ``names`` may be written into the directory
    ``path``: missing, empty, or holding only files of those names (an earlier export; a
    ``__pycache__`` left by importing it is allowed), and not one of the ``protect`` files."""
    out = os.fspath(path)
    info = _stat(out)
    _check_protected(out, info, protect)
    if info is None:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(
            f"cannot write {out}: it exists and is not a directory; the output is a directory, "
            "give a new name"
        )
    allowed = {*names, "__pycache__"}
    try:
        others = sorted(set(os.listdir(out)) - allowed)
    except OSError as error:
        raise OutputError(f"cannot write {out}: {error.strerror or error}") from None
    if others:
        raise OutputError(
            f"cannot write {out}: the directory holds files nn2pgm did not write ({others[0]!r}"
            f"{' and more' if len(others) > 1 else ''}); give a new or empty directory"
        )
    for name in names:
        check_output(os.path.join(out, name), protect)


def _stat(out: str) -> os.stat_result | None:
    if "\0" in out:
        raise OutputError(f"cannot write {out!r}: a file name cannot hold a NUL character")
    try:
        return os.stat(out)
    except FileNotFoundError:
        return None
    except OSError as error:  # a loop of links, a name too long, a folder we may not enter
        raise OutputError(f"cannot write {out}: {error.strerror or error}") from None


def _check_protected(out: str, info: os.stat_result | None, protect: Paths) -> None:
    target = os.path.realpath(out)
    for kept in protect:
        kept = os.fspath(kept)
        if target == os.path.realpath(kept) or (info is not None and _same(out, kept)):
            raise OutputError(
                f"cannot write {out}: it is a file this conversion reads ({kept}); give "
                "another output"
            )


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, protect: Paths = ()) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` all at once, or leave ``path`` untouched.

    ``path`` is checked with :func:`check_output` first and again just before it is replaced.
    The bytes go to a temporary file in the folder of the file ``path`` names (a symbolic link
    is followed and kept), which then replaces that file; on any error the temporary file is
    removed. The new file gets the usual permissions (0666 less the umask), as with
    ``open(path, "w")``.
    """
    out = os.fspath(path)
    protect = tuple(protect)
    check_output(out, protect)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    target = os.path.realpath(out)
    folder, name = os.path.split(target)
    while True:
        temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(f"cannot write {out}: {error.strerror or error}") from None
        break
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        check_output(out, protect)  # it may have changed while the bytes were written
        os.replace(temp, target)
    except BaseException as error:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError) and not isinstance(error, Nn2pgmError):
            raise OutputError(f"cannot write {out}: {error.strerror or error}") from None
        raise
