"""What every kernel resource of the binding shares: release once, `with`, repr."""
from __future__ import annotations


class Handle:
    """A resource this process holds (an object, a link, a map descriptor).

    close() releases it exactly once and is idempotent; `with` closes it; the repr
    says what it is and whether it is open. Subclasses release in _release().
    """

    description: str

    def __init__(self, description: str):
        self.description = description
        self._open = True

    def _release(self) -> None:
        """Free what this handle owns; called once, by close()."""

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._release()

    @property
    def closed(self) -> bool:
        return not self._open

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description} {'closed' if self.closed else 'open'}>"
