"""Files and directories that only the server's user may open.

What the server writes holds job data and secrets: the database keeps every
running attempt's token, the worker output and spool files hold what the jobs
print and return. So every file the server creates is mode 0600 and every
directory 0700, whatever the umask (``os.open`` and ``mkdir`` only ever take
bits away from the mode they are given; an explicit ``chmod`` undoes a umask
such as 0277 that would leave the owner unable to write). SQLite creates its
``-wal``, ``-shm`` and ``-journal`` files with the mode of the database file,
so a database created here keeps them private too.

What already exists is checked at start (README, "Threat model"):

- A directory of the server's own (``socket_dir``, ``spool_dir``, or the
  database's directory when the server creates it) must be a real directory
  of the server's user. Group and other bits are removed, with a warning:
  nobody else has a reason to be in it. A directory of another user, or a
  symbolic link, is refused: in a shared ``/tmp`` another user may have made
  it first, to read the sockets or to redirect what the server writes.
- The directory a database is put in (a project directory, say) may be
  readable by others, since the files in it are 0600, but it must not be
  writable by them: whoever can write there can replace the database or plant
  its ``-wal`` file before the server opens it. That is refused with a
  message saying how to fix it, since changing the mode of somebody's
  project directory is not the server's business.
- The database file and its companions must belong to the server's user;
  group and other bits are removed, with a warning (an older server created
  them with the umask).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat

log = logging.getLogger(__name__)

# The files SQLite keeps beside a database.
DATABASE_COMPANIONS = ("-wal", "-shm", "-journal")


class UnsafePath(PermissionError):
    """A path the server would write is open to other users; the message says how to fix it."""


def private_dir(path: str, what: str) -> None:
    """Create ``path`` (mode 0700), or check and tighten an existing one; ``what`` names it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(
            f"{what} {path} is not a directory (or is a symbolic link): the server "
            f"writes private files there; remove it or choose another {what}"
        )
    _check_owner(path, info, what)
    if info.st_mode & 0o777 != 0o700:
        if info.st_mode & 0o077:
            log.warning(
                "%s %s was mode %03o: now 0700, so that other users cannot reach its files",
                what,
                path,
                info.st_mode & 0o777,
            )
        os.chmod(path, 0o700)


def private_socket(path: str) -> socket.socket:
    """A Unix socket bound at ``path`` that is mode 0600 from the moment it exists.

    Linux gives the bound file the mode of the socket's own inode less the
    umask, so setting that mode before ``bind`` leaves no moment in which the
    file carries the umask's bits; the ``chmod`` after it undoes a umask that
    took the owner's bits away (and is the only guard on other systems).
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(path)
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return sock


def prepare_database(path: str) -> None:
    """Make a SQLite database file private before SQLite opens it (see the module doc)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        _check_shared_dir(directory)
    else:
        private_dir(directory, "database directory")
    for name in (path, *(path + suffix for suffix in DATABASE_COMPANIONS)):
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(name)
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
                raise UnsafePath(f"database file {name} is not a regular file; remove it")
            _check_owner(name, info, "database file")
            if info.st_mode & 0o077:
                log.warning(
                    "database file %s was mode %03o: now 0600 (it holds job data and tokens)",
                    name,
                    info.st_mode & 0o777,
                )
                os.chmod(name, 0o600)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o777 != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def warn_if_others_can_read(path: str, what: str, secret: str) -> None:
    """A file holding a secret (the config file with the API token) should be 0600."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o044:
        log.warning(
            "%s %s holds %s and is readable by other users (mode %03o): run 'chmod 600 %s', "
            "or take the secret from the environment",
            what,
            path,
            secret,
            mode,
            path,
        )


def _check_shared_dir(directory: str) -> None:
    info = os.stat(directory)
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafePath(
            f"the database's directory {directory} belongs to uid {info.st_uid}, not to "
            f"this server's user (uid {os.geteuid()}): its owner could replace the "
            "database; put the database in a directory of the server's user"
        )
    if info.st_mode & 0o022:
        raise UnsafePath(
            f"the database's directory {directory} is writable by other users (mode "
            f"{info.st_mode & 0o777:03o}): they could replace the database or its -wal "
            f"file; run 'chmod go-w {directory}' or put the database in a directory of "
            "its own"
        )


def _check_owner(path: str, info: os.stat_result, what: str) -> None:
    if info.st_uid != os.geteuid():
        raise UnsafePath(
            f"{what} {path} belongs to uid {info.st_uid}, not to this server's user "
            f"(uid {os.geteuid()}): another user may have created it to read what the "
            f"server writes; remove it or choose another {what}"
        )
