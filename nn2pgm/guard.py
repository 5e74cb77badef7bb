"""Running the model's own code: stages, exits, prints, deadlines, deep module trees.

nn2pgm runs code of the user's model when it imports the file, builds the module, asks it for
example inputs, loads weights into it and runs its ``forward``. While it does:

- :func:`user_code` names the *stage* (``importing m.py``, ``building m.py:Net``, ``tracing
  Net``, ...), sends the model's prints to stderr (at the Python level and at the file
  descriptor level, so that stdout stays a data channel for ``inspect --json``), and turns a
  ``sys.exit`` or a ``KeyboardInterrupt`` raised by the model's code into :class:`ModelExit`
  (a Ctrl-C of the user stays a ``KeyboardInterrupt``);
- :func:`deadline` (``--timeout``) ends the run after a number of seconds: ``SIGALRM`` raises
  :class:`Timeout` in the main thread for a clean unwind, and a watchdog thread ends the
  process with exit 2 a little later if the model's code swallows that exception or loops in
  C code that never looks at signals;
- :func:`allow_depth` lets torch's own recursive walks (``train()``, ``deepcopy``,
  ``load_state_dict``, a nested forward) handle a module tree nested thousands of levels deep:
  it raises Python's recursion limit and the soft stack limit of the main thread (never lowers
  them), or refuses a tree deeper than :data:`MAX_MODULE_DEPTH` with one line.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .errors import ModelExit, Nn2pgmError, ResourceError

MAX_MODULE_DEPTH = 5_000
# Python frames of one level of nesting in the deepest walk (deepcopy, the nested forward):
# about 6 measured, twice that allowed.
_FRAMES_PER_LEVEL = 12
# Stack for each Python frame the recursion limit allows: about 300 bytes measured for calls
# through torch's Module.__call__, three times that kept, so that even a forward that calls
# itself without end stops at the recursion limit (RecursionError) before the stack ends.
_STACK_PER_FRAME = 1024
_STACK_BASE = 8 << 20
_SHALLOW = 60  # trees at most this deep fit Python's default recursion limit of 1000

_stages: list[str] = []
_redirects = 0
_interrupted = False  # the user pressed Ctrl-C (set by the SIGINT handler of user_code)


class Timeout(ResourceError):
    """The run took longer than ``--timeout``."""


class DepthError(Nn2pgmError, ValueError):
    """A module tree nested deeper than nn2pgm (or the stack) can follow."""


def current_stage(default: str = "running") -> str:
    """What nn2pgm is doing now (the innermost stage), e.g. ``building m.py:Net``."""
    return _stages[-1] if _stages else default


@contextlib.contextmanager
def stage(text: str) -> Iterator[None]:
    """Name what nn2pgm does inside the block (for the ``--timeout`` message)."""
    _stages.append(text)
    try:
        yield
    finally:
        _stages.pop()


@contextlib.contextmanager
def user_code(text: str) -> Iterator[None]:
    """Run the model's own code: stage ``text``, prints to stderr, exits as :class:`ModelExit`."""
    global _interrupted
    handler = _own_sigint()
    try:
        with stage(text), stdout_to_stderr():
            yield
    except SystemExit as error:
        raise ModelExit(
            f"the model's code exited (sys.exit({error.code!r})) while {text}: nn2pgm needs "
            "the model's code to return; remove the exit"
        ) from None
    except KeyboardInterrupt:
        if handler is None or _interrupted:
            raise  # Ctrl-C of the user (or nobody can tell): stays an interrupt
        raise ModelExit(
            f"the model's code raised KeyboardInterrupt while {text}: nn2pgm needs the "
            "model's code to return; remove the raise"
        ) from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
            if handler is signal.default_int_handler:
                _interrupted = False


def _own_sigint() -> Any:
    """Install a SIGINT handler that remembers a real Ctrl-C; the old handler, or None when
    the handler cannot be replaced (not the main thread, or someone else's handler)."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread():
        return None
    old = signal.getsignal(signal.SIGINT)
    if old is _on_sigint:
        return old  # nested: the outer call restores
    if old is not signal.default_int_handler:
        return None
    _interrupted = False
    signal.signal(signal.SIGINT, _on_sigint)
    return old


def _on_sigint(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Inside the block, whatever is written to stdout (``print``, C code writing to file
    descriptor 1) goes to stderr."""
    global _redirects
    if _redirects:
        yield
        return
    _redirects += 1
    saved = None
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        if saved is not None:
            os.close(saved)
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush_c_stdio()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
        _redirects -= 1


_libc: Any = None


def _flush_c_stdio() -> None:
    """``fflush(NULL)``: C code's buffered prints go out while stdout is still redirected."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None)
        _libc.fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def deadline(seconds: float | None, what: str = "running", grace: float = 2.0) -> Iterator[None]:
    """End the block after ``seconds`` (None: never) with :class:`Timeout`, naming the stage;
    if the block does not unwind within ``grace`` seconds more, print the same line and end
    the process with exit 2."""
    if not seconds:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise Nn2pgmError("--timeout works only in the main thread")

    def message() -> str:
        return (
            f"timed out after {seconds:g} s while {current_stage(what)} (--timeout "
            f"{seconds:g}): the model's code did not finish; fix it or give a larger --timeout"
        )

    fired = False

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Timeout(message())

    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds + grace):
            os.write(2, f"nn2pgm: error: {message()}\n".encode("utf-8", "replace"))
            os._exit(2)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    thread = threading.Thread(target=watchdog, name="nn2pgm-timeout", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        done.set()


def module_depth(root: Any, limit: int = MAX_MODULE_DEPTH) -> int:
    """Levels of nested submodules below ``root`` (0: no children), counted without recursion;
    stops counting past ``limit``."""
    depth, level = 0, [root]
    while depth <= limit:
        seen: set[int] = set()
        below = []
        for module in level:
            for child in module._modules.values():
                if child is not None and id(child) not in seen:
                    seen.add(id(child))
                    below.append(child)
        if not below:
            return depth
        depth, level = depth + 1, below
    return depth


def allow_depth(root: Any, name: str) -> int:
    """Make room for torch's recursive walks over ``root``'s module tree; return its depth.

    Python's recursion limit is raised to what the tree needs, and the soft stack limit of the
    main thread to what that many frames can use; neither is ever lowered."""
    depth = module_depth(root)
    if depth > MAX_MODULE_DEPTH:
        raise DepthError(
            f"{name} nests modules more than {MAX_MODULE_DEPTH:,} levels deep: nn2pgm follows "
            "at most that many; flatten the model (an nn.Sequential of the layers)"
        )
    frames = 1000 + _FRAMES_PER_LEVEL * depth
    if depth <= _SHALLOW or frames <= sys.getrecursionlimit():
        return depth
    need = _STACK_BASE + _STACK_PER_FRAME * frames
    if threading.current_thread() is not threading.main_thread():
        if _STACK_PER_FRAME * frames > (threading.stack_size() or _STACK_BASE) - (2 << 20):
            raise DepthError(
                f"{name} nests modules {depth:,} levels deep: outside the main thread nn2pgm "
                "cannot make room for that; run it in the main thread or flatten the model"
            )
        sys.setrecursionlimit(frames)
        return depth
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            most = max(0, ((hard - _STACK_BASE) // _STACK_PER_FRAME - 1000) // _FRAMES_PER_LEVEL)
            raise DepthError(
                f"{name} nests modules {depth:,} levels deep: the stack limit (ulimit -s "
                f"{hard // 1024}) allows about {most:,}; raise ulimit -s or flatten the model"
            )
        try:
            resource.setrlimit(resource.RLIMIT_STACK, (need, hard))
        except (ValueError, OSError):
            raise DepthError(
                f"{name} nests modules {depth:,} levels deep and the stack limit cannot be "
                "raised for it; raise ulimit -s or flatten the model"
            ) from None
    sys.setrecursionlimit(frames)
    return depth


def walk_modules(root: Any) -> Iterator[tuple[str, Any]]:
    """``(path, module)`` for ``root`` and every submodule, in the order of torch's
    ``named_modules`` (each module once, under its first path), without recursion."""
    seen = {id(root)}
    stack = [("", root)]
    while stack:
        path, module = stack.pop()
        yield path, module
        children = []
        for key, child in module._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                children.append((f"{path}.{key}" if path else key, child))
        stack.extend(reversed(children))
