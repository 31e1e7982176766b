"""Telling the operator what is happening: journald, stdout, sd_notify.

Bottlerocket's host-ctr sends a host container's stdout to the journal
(`journalctl -u host-containers@NAME`), so plain lines on stdout are the
baseline. Where a journal socket is reachable the same lines go there with
structured SCX_SLO_* fields (systemd-python). READY/STATUS go to the service
manager when NOTIFY_SOCKET is set.
"""
from __future__ import annotations

import os
import sys
import syslog
from typing import TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "scx-slo"


def _journal_send():
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        from systemd import journal
    except ImportError:
        return None
    return journal.send


class Reporter:
    def __init__(self, stream: TextIO | None = None, use_journal: bool | None = None):
        self.stream = stream or sys.stdout
        self._send = _journal_send() if use_journal in (None, True) else None

    def log(self, message: str, priority: int = syslog.LOG_INFO, **fields: object) -> None:
        """One line; extra fields become SCX_SLO_<NAME> journal fields."""
        if self._send is not None:
            extra = {f"SCX_SLO_{k.upper()}": str(v) for k, v in fields.items()}
            self._send(message, PRIORITY=priority, SYSLOG_IDENTIFIER=IDENTIFIER, **extra)
        else:
            level = {syslog.LOG_ERR: "error", syslog.LOG_WARNING: "warning",
                     syslog.LOG_CRIT: "critical"}.get(priority, "info")
            self.stream.write(f"scx-slo {level}: {message}\n")
            self.stream.flush()

    def warning(self, message: str, **fields: object) -> None:
        self.log(message, syslog.LOG_WARNING, **fields)

    def error(self, message: str, **fields: object) -> None:
        self.log(message, syslog.LOG_ERR, **fields)

    @staticmethod
    def notify(status: str, ready: bool = False) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        from systemd import daemon
        daemon.notify(("READY=1\n" if ready else "") + f"STATUS={status}")
