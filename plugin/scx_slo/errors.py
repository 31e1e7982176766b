"""The root of scx-slo's typed exceptions.

Every subsystem raises a subclass of ScxSloError at its boundary; the CLI turns
these into a one-line message and a non-zero exit code, never a traceback.
"""


class ScxSloError(Exception):
    """Base class of every error scx-slo reports to a user."""
