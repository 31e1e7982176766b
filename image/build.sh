#!/usr/bin/env bash
# Build the scx-slo host-container image as an OCI image archive, without any
# container daemon:
#   1. `pip wheel` this checkout (the wheel carries the cffi extension and the
#      scheduler object) and its runtime dependencies (pinned: constraints.txt);
#   2. mmdebstrap a small Debian bookworm root filesystem (python3, libbpf1 from
#      bookworm-backports, libsystemd0, libstdc++6 for grpcio, mount for the
#      agent's last-resort bpffs mount) as a tarball; the wheels are installed
#      into it with pip run from its wheel (pip itself is not left in the image);
#      docs, man pages and locales are left out;
#   3. umoci turns the tarball into an OCI image layout (one layer, entrypoint,
#      labels), the manifest and index.json get their mediaType, GNU tar packs
#      the layout as an oci-archive.
# SOURCE_DATE_EPOCH (default: the last commit's time) pins every timestamp.
#
# Usage: image/build.sh [--out PATH] [--work DIR] [--keep-work] [--tag TAG]
# Prints, on stdout, three lines: archive=PATH, digest=sha256:..., size=BYTES
# (the manifest digest is what a registry will show after `skopeo copy`).
# Needs root (mmdebstrap --mode=root), mmdebstrap, umoci, python3 with pip,
# and what `pip wheel .` needs (clang-19, libbpf-dev >= 1.4, libsystemd-dev).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

say() { printf '\033[1mimage:\033[0m %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

out="" work="" keep_work=0 tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep-work) keep_work=1; shift ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "image/build.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root: mmdebstrap --mode=root needs it"
for tool in mmdebstrap umoci tar; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install mmdebstrap umoci"
done
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x "$repo/.venv/bin/python" ]; then py=$repo/.venv/bin/python
else py=python3; fi
"$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip (set PYTHON=...)"

version=$("$py" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])
PY
)
tag=${tag:-$version}
arch=amd64
suite=bookworm
mirror=${SCX_SLO_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if git -C "$repo" rev-parse HEAD >/dev/null 2>&1; then
  revision=$(git -C "$repo" rev-parse HEAD)
  if [ -n "$(git -C "$repo" status --porcelain -- bpf plugin hostcontainer image setup.py pyproject.toml)" ]; then
    revision="$revision-dirty"
  fi
  : "${SOURCE_DATE_EPOCH:=$(git -C "$repo" log -1 --format=%ct)}"
  source_url=${SCX_SLO_IMAGE_SOURCE:-$(git -C "$repo" remote get-url origin 2>/dev/null || echo "unpublished checkout (set SCX_SLO_IMAGE_SOURCE)")}
else
  revision=unknown
  : "${SOURCE_DATE_EPOCH:=0}"
  source_url=${SCX_SLO_IMAGE_SOURCE:-unknown}
fi
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

out=${out:-$repo/build/image/scx-slo-$version-$arch.oci.tar}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/scx-slo-image.XXXXXX")
  [ "$keep_work" = 1 ] || trap 'rm -rf "$work"' EXIT
else
  if [ -e "$work" ] && [ -n "$(ls -A "$work" 2>/dev/null)" ]; then
    die "work directory $work exists and is not empty (give a new or empty one)"
  fi
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
fi

# 1. Wheels ------------------------------------------------------------------
say "building wheels of $repo ($version, revision $revision) and its dependencies"
wheels=$work/wheels
"$py" -m pip wheel -q --disable-pip-version-check -c "$here/constraints.txt" \
  --wheel-dir "$wheels" "$repo" >&2 || die "pip wheel of $repo failed (see above)"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -c "$here/constraints.txt" -d "$wheels" pip >&2 || die "pip download pip failed"
pip_whl=$(cd "$wheels" && ls pip-*.whl | head -n1)
object_sha=$("$py" - "$wheels" <<'PY'
import hashlib, pathlib, sys, zipfile
whl = sorted(pathlib.Path(sys.argv[1]).glob("scx_slo-*.whl"))
if not whl:
    sys.exit("no scx_slo wheel was built")
with zipfile.ZipFile(whl[-1]) as z:
    try:
        data = z.read("scx_slo/data/scx_slo.bpf.o")
    except KeyError:
        sys.exit(f"{whl[-1].name} carries no scheduler object (scx_slo/data/scx_slo.bpf.o): "
                 "is bpf/scx_slo.bpf.c there and does clang-19 build it?")
print(hashlib.sha256(data).hexdigest())
PY
) || die "the wheel check failed"
say "scheduler object sha256 $object_sha"

# 2. Root filesystem -----------------------------------------------------------
say "mmdebstrap $suite ($arch) + bookworm-backports libbpf1 -> rootfs.tar"
rootfs=$work/rootfs.tar
pin='Package: libbpf1\nPin: release n=bookworm-backports\nPin-Priority: 990\n'
mmdebstrap --mode=root --variant=essential --format=tar --architectures=$arch \
  --skip=output/dev \
  --include=python3-minimal,libpython3.11-stdlib,libbpf1,libsystemd0,libstdc++6,mount \
  --dpkgopt="$here/dpkg-nodoc.cfg" \
  --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && printf '$pin' > \"\$1/etc/apt/preferences.d/scx-slo-libbpf\"" \
  --customize-hook='mkdir -p "$1/tmp/wheels" "$1/opt/scx-slo/hostcontainer"' \
  --customize-hook="sync-in $wheels /tmp/wheels" \
  --customize-hook="sync-in $repo/hostcontainer /opt/scx-slo/hostcontainer" \
  --customize-hook="chroot \"\$1\" python3 /tmp/wheels/$pip_whl/pip install --no-index --find-links /tmp/wheels --break-system-packages --no-cache-dir --root-user-action=ignore --disable-pip-version-check --no-warn-script-location scx-slo" \
  --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/log/* "$1"/var/cache/ldconfig/aux-cache "$1/usr/local/bin/__pycache__" "$1/usr/share/info/dir"' \
  --customize-hook='find "$1/opt/scx-slo" -name __pycache__ -prune -exec rm -rf {} +' \
  --customize-hook="$here/rootfs-check.sh" \
  "$suite" "$rootfs" \
  "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
  "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite-backports main" \
  >&2 || die "mmdebstrap failed (see above)"

# 3. OCI image layout and archive --------------------------------------------
say "umoci: OCI layout, one layer, entrypoint and labels"
layout=$work/oci
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci raw add-layer --image "$layout:$tag" \
  --history.created "$created" --history.author scx-slo \
  --history.created_by "mmdebstrap $suite + libbpf1 (bookworm-backports) + pip install scx-slo $version" \
  "$rootfs"
umoci config --image "$layout:$tag" --no-history \
  --created "$created" --author scx-slo --os linux --architecture "$arch" \
  --config.entrypoint /opt/scx-slo/hostcontainer/start \
  --config.workingdir / \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONUNBUFFERED=1 \
  --config.label "org.opencontainers.image.title=scx-slo" \
  --config.label "org.opencontainers.image.description=SLO-aware sched_ext CPU scheduler for Kubernetes nodes (Bottlerocket host container)" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.source=$source_url" \
  --config.label "org.opencontainers.image.created=$created" \
  --config.label "org.opencontainers.image.licenses=GPL-2.0-only" \
  --config.label "io.scx-slo.object.sha256=$object_sha" \
  --manifest.annotation "org.opencontainers.image.version=$version" \
  --manifest.annotation "org.opencontainers.image.revision=$revision" \
  --manifest.annotation "org.opencontainers.image.created=$created"
umoci gc --layout "$layout"

# umoci writes neither the manifest's nor index.json's mediaType, which the
# image-spec says SHOULD be set. Setting it in the manifest changes its bytes,
# so the manifest is stored again under its new digest and index.json points at
# that (digest and size). Deterministic: same input, same output.
"$py" - "$layout" <<'PY' || die "setting the manifest and index mediaType failed"
import hashlib, json, pathlib, sys
layout = pathlib.Path(sys.argv[1])
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"

def with_media_type(doc, media_type):
    # schemaVersion first, then mediaType, as in the image-spec's examples
    if doc.get("mediaType", media_type) != media_type:
        sys.exit(f"mediaType is {doc['mediaType']!r}, expected {media_type!r}")
    rest = {k: v for k, v in doc.items() if k not in ("schemaVersion", "mediaType")}
    return {"schemaVersion": doc["schemaVersion"], "mediaType": media_type, **rest}

def dump(doc):
    return json.dumps(doc, separators=(",", ":")).encode()

index_path = layout / "index.json"
index = json.loads(index_path.read_bytes())
for desc in index["manifests"]:
    if desc["mediaType"] != MANIFEST:
        sys.exit(f"index.json lists a {desc['mediaType']}, expected only image manifests")
    algo, _, old_hex = desc["digest"].partition(":")
    old_blob = layout / "blobs" / algo / old_hex
    data = dump(with_media_type(json.loads(old_blob.read_bytes()), MANIFEST))
    new_hex = hashlib.sha256(data).hexdigest()
    if new_hex != old_hex:
        (layout / "blobs" / "sha256" / new_hex).write_bytes(data)
        old_blob.unlink()
    desc.update(digest=f"sha256:{new_hex}", size=len(data))
index_path.write_bytes(dump(with_media_type(index, INDEX)))
PY

tmp_out=$out.partial
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  --format=gnu -C "$layout" -cf "$tmp_out" oci-layout index.json blobs
mv -f "$tmp_out" "$out"

digest=$("$py" - "$layout" <<'PY'
import json, sys
print(json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"])
PY
)
size=$(stat -c %s "$out")
say "image $tag: $out ($((size / 1024 / 1024)) MiB), manifest $digest"
say "push with: skopeo copy oci-archive:$out:$tag docker://REGISTRY/scx-slo:$tag"
echo "archive=$out"
echo "digest=$digest"
echo "size=$size"
