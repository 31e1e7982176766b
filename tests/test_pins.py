"""pins.base_dir's last resort, mounting a bpffs with mount(8), on the host (no VM):
a missing or failing mount program is a PinError naming the program and the path."""
from __future__ import annotations

import pytest

from scx_slo.loader import pins


@pytest.fixture
def no_bpffs(tmp_path, monkeypatch):
    """No bpffs anywhere, a private LOCAL_BPFFS and a PATH of one empty directory."""
    monkeypatch.setattr(pins, "_is_bpffs", lambda path, mountinfo: False)
    local = tmp_path / "sys-fs-bpf"
    monkeypatch.setattr(pins, "LOCAL_BPFFS", local)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return local, bin_dir


def test_missing_mount_program_is_a_pin_error(no_bpffs):
    local, _ = no_bpffs
    with pytest.raises(pins.PinError) as e:
        pins.base_dir()
    msg = str(e.value)
    assert f"mount -t bpf bpf {local}" in msg and "no mount program in PATH" in msg


def test_failing_mount_is_a_pin_error_with_its_message(no_bpffs):
    local, bin_dir = no_bpffs
    fake = bin_dir / "mount"
    fake.write_text("#!/bin/sh\necho \"mount: $4: permission denied.\" >&2\nexit 32\n")
    fake.chmod(0o755)
    with pytest.raises(pins.PinError) as e:
        pins.base_dir()
    msg = str(e.value)
    assert f"mount -t bpf bpf {local}" in msg and "exit status 32" in msg
    assert f"mount: {local}: permission denied." in msg


def test_mounted_bpffs_is_used(no_bpffs):
    local, bin_dir = no_bpffs
    fake = bin_dir / "mount"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert pins.base_dir() == local / pins.SUBDIR
    assert (local / pins.SUBDIR).is_dir()


def test_no_mount_when_not_asked(no_bpffs):
    with pytest.raises(pins.PinError, match="no bpffs mounted"):
        pins.base_dir(mount_if_missing=False)
