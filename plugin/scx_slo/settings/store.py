"""The last good configuration, kept across restarts of the host container.

Where: Bottlerocket gives each host container a persistent directory,
/local/host-containers/NAME on the host, seen inside the container as
/.bottlerocket/host-containers/current (and, in older releases, only as
/.bottlerocket/host-containers/NAME). Bottlerocket's own admin and control
containers keep their state there (SSH host keys in current/etc/ssh, the SSM
agent's state in current/ssm). The user-data file in it is written by
Bottlerocket from settings.host-containers.NAME.user-data and is replaced on
every change, so we never write it: our state goes to a subdirectory,
DEFAULT_STATE_DIR = /.bottlerocket/host-containers/current/scx-slo-state.

What: last-good.toml (the exact text of the last document that validated)
and last-good.json (its SHA-256 and when it was accepted). Writes are atomic
(temp file + fsync + rename), so a crash leaves the old or the new copy.

load_effective(user_data_path, state_dir) is what the agent calls at start:
  - user-data valid      -> it is used and saved as last good   (source "user-data")
  - user-data invalid    -> the last good one stays in force, the reason is logged
                            and returned                         (source "last-good")
  - invalid, none saved  -> built-in defaults                    (source "defaults")
  - no user-data at all  -> last good if any, else defaults
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass

from scx_slo.settings.errors import SettingsError, StoreError
from scx_slo.settings.load import USER_DATA_PATH, decode_user_data, read_bytes
from scx_slo.settings.model import Config
from scx_slo.settings.validate import Loaded, validate_bytes, validate_text

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/.bottlerocket/host-containers/current/scx-slo-state"
LAST_GOOD = "last-good.toml"
LAST_GOOD_META = "last-good.json"
# What the agent runs with when nothing valid was ever supplied: all defaults, no classes.
DEFAULTS_TEXT = "# built-in defaults\n[scheduler]\n"

SOURCE_USER_DATA = "user-data"
SOURCE_LAST_GOOD = "last-good"
SOURCE_DEFAULTS = "defaults"


@dataclass
class Effective:
    config: Config
    source: str                 # SOURCE_USER_DATA | SOURCE_LAST_GOOD | SOURCE_DEFAULTS
    error: SettingsError | None # why the user-data was not used, if it was not
    loaded: Loaded

    def __iter__(self):          # allows: config, source, error = load_effective(...)
        return iter((self.config, self.source, self.error))


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_last_good(state_dir: str, loaded: Loaded) -> None:
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        data = loaded.text.encode("utf-8")
        _atomic_write(os.path.join(state_dir, LAST_GOOD), data)
        meta = {"sha256": hashlib.sha256(data).hexdigest(), "source": loaded.filename,
                "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_write(os.path.join(state_dir, LAST_GOOD_META),
                      (json.dumps(meta, indent=2) + "\n").encode())
    except OSError as e:
        raise StoreError(f"cannot save the last good settings in {state_dir}: "
                         f"{e.strerror or e}") from None


def read_last_good(state_dir: str) -> Loaded | None:
    """The saved last-good document, or None if there is none (or it no longer validates)."""
    path = os.path.join(state_dir, LAST_GOOD)
    if not os.path.exists(path):
        return None
    try:
        return validate_bytes(read_bytes(path), path)
    except SettingsError as e:
        log.warning("ignoring saved settings %s: %s", path, e)
        return None


def load_effective(user_data_path: str = USER_DATA_PATH,
                   state_dir: str = DEFAULT_STATE_DIR, *, save: bool = True) -> Effective:
    """The configuration in force, from the user-data file: see the module docstring.

    With save=False (`settings show`) nothing is written: a valid user-data is
    reported as in force without becoming the saved last good copy."""
    if not os.path.exists(user_data_path):
        log.info("no user-data at %s", user_data_path)
        return _effective(None, user_data_path, state_dir, save)
    return _effective(lambda: read_bytes(user_data_path), user_data_path, state_dir, save)


def load_effective_b64(user_data_b64: object, state_dir: str = DEFAULT_STATE_DIR,
                       label: str = "settings.host-containers.scx-slo.user-data", *,
                       save: bool = True) -> Effective:
    """The configuration in force, from a base64 user-data value (as the API returns it)."""
    return _effective(lambda: decode_user_data(user_data_b64), label, state_dir, save)


def _effective(fetch, label: str, state_dir: str, save: bool) -> Effective:
    error: SettingsError | None = None
    if fetch is not None:
        try:
            loaded = validate_bytes(fetch(), label)
        except SettingsError as e:
            error = e
        else:
            try:
                if save:
                    save_last_good(state_dir, loaded)
            except StoreError as e:
                log.warning("%s", e)
            log.info("settings from %s accepted", label)
            return Effective(loaded.config, SOURCE_USER_DATA, None, loaded)
        log.error("settings in %s refused, keeping the last good configuration:\n%s",
                  label, error)
    last = read_last_good(state_dir)
    if last is not None:
        return Effective(last.config, SOURCE_LAST_GOOD, error, last)
    defaults = validate_text(DEFAULTS_TEXT, "<built-in defaults>")
    if error is not None:
        log.error("no last good settings in %s; running with built-in defaults", state_dir)
    return Effective(defaults.config, SOURCE_DEFAULTS, error, defaults)
