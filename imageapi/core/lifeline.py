"""Child processes that die with the process that started them.

A `kill -9` (or the OOM killer) gives a process no chance to stop its children, and a worker
blocked on its task queue, or an ffmpeg in a session of its own, would otherwise live on (the pool
of a scan or a server is about 185 MB). Two mechanisms, both used:

- Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the kernel kill the child when its parent dies.
  The kernel means the parent *thread*: the one that forked. So it is set only where that thread
  lives as long as the process (the fork server's one thread, a worker's main thread, the event
  loop's thread) -- see `imageapi.core.pool`.
- Everywhere: a worker holds the read end of a pipe whose only write end stays in the process that
  owns the pool (`Lifeline`). Nothing is ever written to it; when the owner dies the kernel closes
  the write end, the read returns end-of-file, and a thread in the worker ends the worker at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 70  # a worker's exit status when it leaves because its owner is gone

_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        # The process's own symbols include libc's (find_library would run ldconfig at import).
        _libc = ctypes.CDLL(None, use_errno=True)
        _prctl = _libc.prctl
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _prctl.restype = ctypes.c_int
    except (OSError, AttributeError):
        _prctl = None


def supported() -> bool:
    """Whether the kernel can kill children when their parent dies (Linux)."""
    return _prctl is not None


def die_with_parent(expected_parent: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when the thread that forked it ends. With
    `expected_parent`, exit at once if that parent is already gone (it died before the request
    was made, and the kernel will never send the signal). False where unsupported."""
    if _prctl is None:
        return False
    if _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(EXIT_ORPHANED)
    return True


def preexec() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess (and asyncio's subprocesses) that makes the child die with
    the calling thread's process, or None where that is not supported. It runs in the forked child
    before exec: one prctl call and a getppid, nothing that takes a lock."""
    if _prctl is None:
        return None
    parent = os.getpid()
    prctl = _prctl

    def set_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(EXIT_ORPHANED)

    return set_signal


def in_forkserver() -> bool:
    """Whether this code runs inside multiprocessing's fork server (while it imports its preload
    modules), not in any other process."""
    from multiprocessing import forkserver

    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class Lifeline:
    """A pipe that reads end-of-file when the process that made it is gone.

    The write end never leaves this process (os.pipe's descriptors are not inherited by exec'd
    children); `reader` is given to worker processes, which pass it to `watch`."""

    def __init__(self) -> None:
        import multiprocessing

        self.pid = os.getpid()
        self.reader, self._writer = multiprocessing.Pipe(duplex=False)


_lifeline: Lifeline | None = None
_lifeline_lock = threading.Lock()


def lifeline() -> Lifeline:
    """This process's lifeline (one per process, kept open until it exits)."""
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None or _lifeline.pid != os.getpid():
            _lifeline = Lifeline()
        return _lifeline


def watch(reader: Connection) -> None:
    """In a child: end this process as soon as `reader` (a Lifeline's) reads end-of-file."""

    def wait() -> None:
        try:
            reader.recv_bytes()  # nothing is ever sent: this returns only by raising at EOF
        except (EOFError, OSError):
            pass
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=wait, name="imageapi-lifeline", daemon=True).start()
