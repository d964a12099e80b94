"""Worker processes: spawn, identify, watch, signal.

Exit watching uses a pidfd (``os.pidfd_open``) registered with the event
loop, for children and for re-adopted workers alike. A child of this server
is then reaped for its exit status. A re-adopted worker was the child of a
previous server process and has been reparented, so nobody here can wait for
it: its pidfd still says *when* it exits, but its exit status is unknown. The
server then learns the outcome from the terminal message it recorded or from
the spool file (SPOOL-3); without either the job fails with "exit status
unknown" (EXIT-1).

A PID alone does not identify a process (PIDs are reused, and ``kill(pid,
0)`` is true for zombies), so the server stores the PID with the process
start time, field 22 of ``/proc/<pid>/stat``, and compares both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from .resources import child_setup, is_transient

PIDFD_RETRY_SECONDS = 0.5


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # field 3, state: zombie or dead
        return None
    return int(fields[19])  # field 22


def is_same_process(pid: int, started: int) -> bool:
    return pid > 0 and start_time(pid) == started


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    stdin_path: str,
    out_path: str,
    err_path: str,
) -> subprocess.Popen[bytes]:
    """Start a worker in a new process group (SRV-8).

    Standard input is a file holding the payload (PAY-1: the worker reads it to
    end of file), unlinked once the child has it open, so the token never
    stays on disk and the whole payload is there before the worker runs.
    Standard output and error are files that outlive this server (SRV-7).
    Raises OSError when the command cannot be started.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    with contextlib.ExitStack() as stack:
        stack.callback(_unlink, stdin_path)
        stdin = os.open(stdin_path, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, stdin)
        out = os.open(out_path, flags, 0o600)
        stack.callback(os.close, out)
        err = os.open(err_path, flags, 0o600)
        stack.callback(os.close, err)
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=out,
            stderr=err,
            process_group=0,
            close_fds=True,
            preexec_fn=child_setup(),
        )


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def find_worker(job_id: str) -> int | None:
    """The live worker of ``job_id`` that nobody recorded, by its environment (ENV-1).

    Used only after a crash that fell between spawning a worker and storing
    its PID: the worker leads its process group (SRV-8) and carries
    ``EXTJOB_JOB_ID`` in its environment.
    """
    marker = f"EXTJOB_JOB_ID={job_id}\0".encode()
    own_group = os.getpgid(0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read() + b"\0"
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        leader = int(fields[2]) == pid != own_group  # field 5, pgrp
        if leader and fields[0] not in (b"Z", b"X") and marker in environ:
            return pid
    return None


class ExitWatcher:
    """Calls ``on_exit(status)`` once when the process exits.

    ``status`` is the return code as ``subprocess`` reports it (negative for
    a signal) for a child, and None for a process that is not our child.
    """

    def __init__(
        self,
        pid: int,
        on_exit: Callable[[int | None], None],
        child: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._child = child
        self._on_exit = on_exit
        self._fd: int | None = None
        self._pid = pid
        self._retry: asyncio.TimerHandle | None = None
        self._open()

    def _open(self) -> None:
        self._retry = None
        try:
            self._fd = os.pidfd_open(self._pid)
        except ProcessLookupError:
            self._loop.call_soon(self._fire)
            return
        except OSError as exc:
            if not is_transient(exc):
                raise
            # Out of descriptors for now: the process is running, look again soon.
            self._retry = self._loop.call_later(PIDFD_RETRY_SECONDS, self._open)
            return
        self._loop.add_reader(self._fd, self._fire)

    def _fire(self) -> None:
        self.close()
        status = None
        if self._child is not None:
            status = self._child.wait()  # readable pidfd: already exited, returns at once
        self._on_exit(status)

    def close(self) -> None:
        """Stop watching (the server is stopping and leaves the worker running)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a process group; False if none of it remains."""
    if pgid <= 0:
        return False  # killpg(0) would signal the server's own group
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)  # type: ignore[arg-type]
