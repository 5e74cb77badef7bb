"""Writing output files so that a reader never sees a partial file."""

from __future__ import annotations

import os
import secrets

from ..errors import Nn2pgmError


class OutputError(Nn2pgmError, OSError):
    """An output file cannot be written where the user asked."""


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` all at once, or leave ``path`` untouched.

    The bytes go to a temporary file in the same folder, which then replaces ``path``; on any
    error the temporary file is removed. The new file gets the usual permissions (0666 less
    the umask), as with ``open(path, "w")``.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder, name = os.path.split(os.fspath(path))
    while True:
        temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(
                f"cannot write {os.fspath(path)}: {error.strerror or error}"
            ) from None
        break
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as error:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError) and not isinstance(error, Nn2pgmError):
            raise OutputError(
                f"cannot write {os.fspath(path)}: {error.strerror or error}"
            ) from None
        raise
