"""Reading settings: files, user-data bytes and base64 user-data strings."""
from __future__ import annotations

import base64
import binascii
import os
import re

from scx_slo.settings.errors import Issue, UserDataError, ValidationError
from scx_slo.settings.validate import MAX_BYTES, Loaded, validate_bytes

# Where Bottlerocket puts the decoded user-data of the running host container.
USER_DATA_PATH = "/.bottlerocket/host-containers/current/user-data"

_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of PATH, refusing anything larger than a settings document can be."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ValidationError([Issue(name, 1, 1, "", f"cannot read: {e.strerror or e}")]) \
            from None
    if len(data) > MAX_BYTES:
        raise ValidationError([Issue(name, 1, 1, "", f"document is larger than {MAX_BYTES} "
                                                     "bytes")])
    return data


def load_file(path: str | os.PathLike) -> Loaded:
    """Validate the settings file at PATH (ValidationError lists every issue)."""
    return validate_bytes(read_bytes(path), os.fspath(path))


def encode_user_data(text: str) -> str:
    """The base64 form Bottlerocket's host-containers.NAME.user-data setting takes."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_user_data(b64: object) -> bytes:
    """Strictly decode a user-data setting value; UserDataError if it is not base64."""
    if not isinstance(b64, str):
        raise UserDataError(f"user-data must be a base64 string, got {type(b64).__name__}")
    compact = "".join(b64.split())
    if len(compact) > 2 * MAX_BYTES:
        raise UserDataError("user-data is too large")
    if not _B64_RE.fullmatch(compact) or len(compact) % 4:
        raise UserDataError("user-data is not valid base64 (characters outside A-Z a-z 0-9 + / "
                            "= or wrong padding)")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise UserDataError(f"user-data is not valid base64: {e}") from None


def load_user_data_b64(b64: object, filename: str = "<user-data>") -> Loaded:
    """Decode and validate a base64 user-data value (as the API returns it)."""
    return validate_bytes(decode_user_data(b64), filename)
