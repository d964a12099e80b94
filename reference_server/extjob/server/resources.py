"""What the server can run out of for a while: file descriptors, processes, memory.

Each running job costs the server a few file descriptors (its listening
socket, the worker's connection, a pidfd), and every HTTP client one more.
At the usual soft limit of 1,024, a few hundred idle connections were enough
to make a falling-due job fail for good ("spawn failed: [Errno 24] Too many
open files"). So:

- ``raise_open_files_limit`` lifts the soft ``RLIMIT_NOFILE`` to the hard
  limit when the server starts (and says what it got). Workers get the
  original soft limit back (``child_setup``): a program that loops over
  every possible descriptor, or uses ``select()``, expects the usual limit.
- ``is_transient`` tells the errors after which a spawn is tried again
  later (the job stays pending) from those that fail the attempt (a missing
  command); ``Backoff`` spaces the tries.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Callable

log = logging.getLogger(__name__)

# fork, exec or open failing for want of descriptors (EMFILE: this process,
# ENFILE: the system), processes or memory (EAGAIN, ENOMEM): none says
# anything about the job.
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})

_original_soft: int | None = None  # the soft limit before we raised it


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; return (soft, hard) now."""
    global _original_soft
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _kernel_maximum()
    if soft >= target:
        log.info("open files limit: %d (the hard limit)", soft)
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
        return soft, hard
    if _original_soft is None:
        _original_soft = soft
    log.info("open files limit raised from %d to %d (the hard limit)", soft, target)
    return target, hard


def _kernel_maximum() -> int:
    """An unlimited hard limit still stops at fs.nr_open."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def child_setup() -> Callable[[], None] | None:
    """What a worker runs before exec: the open files limit it would have had."""
    if _original_soft is None:
        return None
    soft = _original_soft

    def restore() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return restore


def is_transient(exc: OSError) -> bool:
    return exc.errno in TRANSIENT_ERRNOS


def out_of_descriptors() -> bool:
    """Whether this process can open no file descriptor at the moment."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    os.close(fd)
    return False


class Backoff:
    """Delays between tries after transient failures: ``first`` doubling to ``cap`` seconds."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = 0.0

    def failed(self) -> float:
        """The delay before the next try."""
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0
