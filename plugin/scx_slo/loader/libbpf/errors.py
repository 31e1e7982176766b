"""The one place where libbpf's return conventions become Python exceptions.

libbpf (>= 1.0) reports failure either as a NULL pointer with errno set, or as
a negative errno. `call()` makes a libbpf call and turns a failure into a
`LibbpfError` subclass that carries the operation, the errno name and the lines
libbpf logged during that call, which arrive through the print callback shim
(_shim.c) as Python logging records. (`check()` is the same for a result at hand.)
"""
from __future__ import annotations

import collections
import errno as _errno
import itertools
import logging
import os
from typing import Callable

from scx_slo.errors import ScxSloError
from scx_slo.loader.libbpf.ffi import ffi, lib

log = logging.getLogger("scx_slo.loader.libbpf")

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_TAIL_LINES = 12

# (sequence number, line) of libbpf's recent log output, newest last.
_recent: collections.deque[tuple[int, int, str]] = collections.deque(maxlen=400)
_seq = itertools.count(1)
_last_seq = 0


class LibbpfError(ScxSloError):
    """A libbpf call failed."""

    def __init__(self, operation: str, err: int, log_tail: list[str] | None = None,
                 detail: str | None = None):
        self.operation = operation
        self.errno = err
        self.errno_name = _errno.errorcode.get(err) or LIBBPF_ERRNO_NAMES.get(err) \
            or f"errno {err}"
        self.log_tail = list(log_tail or [])
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        msg = f"{self.operation}: {self.errno_name} ({describe(self.errno)})"
        if self.detail:
            msg += f": {self.detail}"
        if self.log_tail:
            msg += "\n  " + "\n  ".join(self.log_tail)
        return msg


# libbpf's own error codes (enum libbpf_errno), beyond the errno range.
LIBBPF_ERRNO_NAMES = {int(getattr(lib, n)): n for n in dir(lib) if n.startswith("LIBBPF_ERRNO__")}
ENOTSUPP = 524      # kernel-internal (include/linux/errno.h): no name in Python's errno


def describe(err: int) -> str:
    """libbpf_strerror(): strerror for errnos, libbpf's text for its own codes."""
    buf = ffi.new("char[]", 256)
    if lib.libbpf_strerror(err, buf, 256) < 0:
        return os.strerror(err)
    return ffi.string(buf).decode("utf-8", "replace")


class NotFound(LibbpfError):
    """ENOENT: no such key, pin or object."""


class Exists(LibbpfError):
    """EEXIST: the key or pin already exists."""


class PermissionDenied(LibbpfError):
    """EPERM/EACCES outside of program verification."""


class Unsupported(LibbpfError):
    """EOPNOTSUPP/ENOTSUPP/ESRCH: the kernel cannot do this (e.g. no sched_ext)."""


class VerifierError(LibbpfError):
    """The kernel refused to load a program; `verifier_log` holds its log."""

    def __init__(self, operation: str, err: int, verifier_log: str,
                 log_tail: list[str] | None = None):
        self.verifier_log = verifier_log
        super().__init__(operation, err, log_tail)

    def __str__(self) -> str:
        base = super().__str__()
        tail = "\n".join(self.verifier_log.rstrip().splitlines()[-30:])
        return f"{base}\nverifier log (tail):\n{tail}" if tail else base


class LibbpfVersionError(ScxSloError, ImportError):
    """The libbpf shared library is too old for scx_slo."""


_BY_ERRNO = {
    _errno.ENOENT: NotFound,
    _errno.EEXIST: Exists,
    _errno.EPERM: PermissionDenied,
    _errno.EACCES: PermissionDenied,
    _errno.EOPNOTSUPP: Unsupported,
    ENOTSUPP: Unsupported,
    _errno.ESRCH: Unsupported,
}


def on_libbpf_log(level: int, text: str) -> None:
    """Receive one message from libbpf: log it and keep it for error reports."""
    global _last_seq
    text = text.rstrip("\n")
    if not text:
        return
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", text)
    for line in text.splitlines():
        _last_seq = next(_seq)
        _recent.append((_last_seq, level, line))


def log_mark() -> int:
    """A position in libbpf's log; pass it to check(since=...) for that call's lines only."""
    return _last_seq


def log_tail(since: int | None = None, lines: int = _TAIL_LINES) -> list[str]:
    """libbpf's warnings and info lines, after log_mark() `since` if given."""
    selected = [line for seq, level, line in _recent
                if (since is None or seq > since) and level <= 1]
    return selected[-lines:]


def check(operation: str, result, *, since: int | None = None,
          verifier_log: str | None = None):
    """Return `result` if the libbpf call succeeded, else raise a typed LibbpfError.

    `result` is either a cffi pointer (NULL means failure, errno holds why) or
    an int (negative means -errno). `since` is a log_mark() taken before the
    call, so the exception carries only libbpf's lines about this call. A
    failed load with a non-empty kernel verifier log raises VerifierError.
    """
    if isinstance(result, int):
        if result >= 0:
            return result
        err = -result
    else:
        if result != ffi.NULL:
            return result
        err = ffi.errno or _errno.EINVAL
    if verifier_log and verifier_log.strip():
        raise VerifierError(operation, err, verifier_log, log_tail(since))
    cls = _BY_ERRNO.get(err, LibbpfError)
    raise cls(operation, err, log_tail(since))


def call(operation: str, fn, *args, verifier_log: Callable[[], str] | None = None):
    """`fn(*args)`, a libbpf call, checked as check() does, with the libbpf lines logged
    during the call in the error; `verifier_log()` is read only if it failed."""
    since = _last_seq
    result = fn(*args)
    failed = (result < 0) if isinstance(result, int) else (result == ffi.NULL)
    return check(operation, result, since=since,
                 verifier_log=verifier_log() if failed and verifier_log else None)
