"""Waiting in the guest scripts: poll a predicate until it holds or time runs out."""
from __future__ import annotations

import time


def wait_for(pred, timeout: float, step: float = 0.05):
    """pred()'s first true value within timeout seconds, else its last (false) one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
