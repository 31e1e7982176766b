#!/usr/bin/env bash
# Build the scx-slo host-container image as an OCI image archive, without any
# container daemon:
#   1. `pip wheel` this checkout (the wheel carries the cffi extension and the
#      scheduler object) and its runtime dependencies (pinned: constraints.txt);
#      for a foreign architecture (arm64 on an amd64 machine): that
#      architecture's PyPI wheels, and the compiled code PyPI has no wheel for
#      (scx-slo's cffi extension, systemd-python) built in a throwaway
#      mmdebstrap root filesystem of that architecture, run under qemu-user;
#   2. per architecture, mmdebstrap a small Debian bookworm root filesystem (python3, libbpf1 from
#      bookworm-backports, libsystemd0, libstdc++6 for grpcio, mount for the
#      agent's last-resort bpffs mount) as a tarball; the wheels are installed
#      into it with pip run from its wheel (pip itself is not left in the image);
#      docs, man pages and locales are left out;
#   3. umoci turns each tarball into an image (one layer, entrypoint, labels)
#      of one OCI image layout, the manifests and index.json get their
#      mediaType, each index.json descriptor its platform; GNU tar packs the
#      layout as one oci-archive.
# SOURCE_DATE_EPOCH (default: the last commit's time) pins every timestamp.
#
# Usage: image/build.sh [--arch amd64[,arm64]] [--out PATH] [--work DIR] [--keep-work] [--tag TAG]
# Prints, on stdout: archive=PATH, digest=sha256:... (the first architecture's
# manifest digest, what a registry shows after `skopeo copy`), one
# manifest.ARCH=sha256:... line per architecture, size=BYTES.
# One architecture: its manifest's ref.name is TAG; several: TAG-ARCH each.
# Needs root (mmdebstrap --mode=root), mmdebstrap, umoci, python3 with pip,
# and what `pip wheel .` needs (clang-19, libbpf-dev >= 1.4, libsystemd-dev);
# a foreign architecture also needs qemu-user-static, binfmt-support and
# arch-test (binfmt_misc is mounted and qemu registered if they are not).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

say() { printf '\033[1mimage:\033[0m %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

out="" work="" keep_work=0 tag="" arch_list=amd64
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch_list=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep-work) keep_work=1; shift ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
suite=bookworm

# The architectures, Debian names; qemu and manylinux name them by machine.
declare -A machine=([amd64]=x86_64 [arm64]=aarch64)
IFS=, read -ra arches <<<"$arch_list"
[ ${#arches[@]} -gt 0 ] || die "--arch needs at least one architecture (amd64, arm64)"
for a in "${arches[@]}"; do
  [ -n "${machine[$a]:-}" ] || die "unsupported architecture '$a' in --arch $arch_list (known: amd64, arm64)"
done
[ "$(printf '%s\n' "${arches[@]}" | sort -u | wc -l)" = ${#arches[@]} ] \
  || die "--arch $arch_list names an architecture twice"
native=$(dpkg --print-architecture)
[ -n "${machine[$native]:-}" ] || die "this machine's architecture $native is not amd64 or arm64"
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

out=${out:-$repo/build/image/scx-slo-$version-$(IFS=-; echo "${arches[*]}").oci.tar}
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

# A foreign architecture's programs (its dpkg, python3, gcc) run under
# qemu-user through binfmt_misc; arch-test (what mmdebstrap itself asks)
# proves that they do.
for a in "${arches[@]}"; do
  [ "$a" = "$native" ] && continue
  q=${machine[$a]}
  hint="apt-get install qemu-user-static binfmt-support arch-test (scripts/setup.sh does)"
  command -v arch-test >/dev/null || die "arch-test not found: $hint"
  [ -x "/usr/bin/qemu-$q-static" ] || die "building for $a needs /usr/bin/qemu-$q-static: $hint"
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    say "mounting binfmt_misc on /proc/sys/fs/binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
      || die "cannot mount binfmt_misc (no CONFIG_BINFMT_MISC, or not allowed in this container): $a programs cannot run here"
  fi
  if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$q" ]; then
    say "registering qemu-$q with binfmt_misc"
    command -v update-binfmts >/dev/null || die "update-binfmts not found: $hint"
    update-binfmts --enable "qemu-$q" >&2 || true
  fi
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$q" ] \
    || die "binfmt_misc has no qemu-$q entry after update-binfmts --enable qemu-$q: $a programs cannot run here"
  arch-test "$a" >/dev/null || die "binfmt_misc has qemu-$q but arch-test $a fails: $a programs do not run here"
done

# 1. Wheels ------------------------------------------------------------------
say "building wheels of $repo ($version, revision $revision) and its dependencies"
wheels=$work/wheels-$native
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

# 1b. Wheels for a foreign architecture ----------------------------------------
# Pure-Python wheels are the native ones; PyPI's binary wheels are downloaded
# for the architecture (the same versions); what pip built here from source
# (tag linux_MACHINE) is built again in a root filesystem of the architecture:
# sdists with pip, and scx-slo's cffi extension, which replaces the native one
# in a copy of the native scx-slo wheel (the Python code and the scheduler
# object are the same bytes on every architecture: the object is BPF, CO-RE).
foreign_wheels() {
  local a=$1 q=${machine[$1]} dst=$work/wheels-$1 src=$work/foreign-src-$1
  local built=$work/foreign-built-$1
  mkdir -p "$dst" "$src/sdist" "$src/libbpf" "$built"
  cp "$wheels"/*-none-any.whl "$dst/"
  local whl name_ver binary=() sdist=()
  for whl in "$wheels"/*.whl; do
    case "$(basename "$whl")" in
      *-none-any.whl|scx_slo-*) ;;
      *-linux_"${machine[$native]}".whl) name_ver=$(basename "$whl" | cut -d- -f1,2); sdist+=("${name_ver/-/==}") ;;
      *) name_ver=$(basename "$whl" | cut -d- -f1,2); binary+=("${name_ver/-/==}") ;;
    esac
  done
  say "$a: downloading PyPI wheels: ${binary[*]}"
  "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform "manylinux2014_$q" --python-version 3.11 --implementation cp --abi cp311 \
    -d "$dst" "${binary[@]}" >&2 || die "pip download of $a wheels failed (see above)"
  if [ ${#sdist[@]} -gt 0 ]; then
    "$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: \
      -d "$src/sdist" "${sdist[@]}" >&2 || die "pip download of sdists ${sdist[*]} failed"
  fi
  cp "$repo"/plugin/scx_slo/loader/libbpf/{_build.py,libbpf.cdef,_shim.c,_shim.h} "$src/libbpf/"
  cp "$dst"/cffi-*.whl "$dst"/pycparser-*.whl "$wheels/$pip_whl" "$src/"
  # run inside the build root: cffi for the compile, then the compiled code
  cat > "$src/build-in-root.sh" <<SH
set -eu
pip() { python3 /tmp/src/$pip_whl/pip --disable-pip-version-check "\$@"; }
pip install -q --no-index --find-links /tmp/src --break-system-packages --root-user-action=ignore cffi
# from the output directory: cffi compiles there, and _build.py names its C
# source relative to the current directory
mkdir -p /tmp/built/cffi && cd /tmp/built/cffi
python3 -c 'import runpy; print(runpy.run_path("/tmp/src/libbpf/_build.py")["ffibuilder"].compile(tmpdir="."))'
for s in /tmp/src/sdist/*; do
  [ -e "\$s" ] || continue
  pip wheel -q --no-index --no-build-isolation --no-deps -w /tmp/built "\$s"
done
SH

  say "$a: compiling the cffi extension and ${sdist[*]:-no sdists} under qemu-$q (mmdebstrap build root)"
  # the build root is thrown away (format null); only $built comes out of it
  mmdebstrap --mode=root --variant=essential --format=null --architectures="$a" \
    --include=python3-dev,gcc,libc6-dev,libbpf-dev,libsystemd-dev,pkg-config,python3-setuptools,python3-wheel \
    --dpkgopt="$here/dpkg-nodoc.cfg" \
    --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && printf '$pin_dev' > \"\$1/etc/apt/preferences.d/scx-slo-libbpf\"" \
    --customize-hook='mkdir -p "$1/tmp/src" "$1/tmp/built"' \
    --customize-hook="sync-in $src /tmp/src" \
    --customize-hook='chroot "$1" sh /tmp/src/build-in-root.sh' \
    --customize-hook="sync-out /tmp/built $built" \
    "$suite" /dev/null \
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite-backports main" \
    >&2 || die "the $a build root (mmdebstrap under qemu-$q) failed (see above)"
  if [ ${#sdist[@]} -gt 0 ]; then cp "$built"/*.whl "$dst/"; fi

  "$py" - "$wheels" "$built/cffi" "linux_$q" "$dst" <<'PY' || die "making the $a scx-slo wheel failed"
import base64, hashlib, pathlib, sys, zipfile
native_dir, ext_dir, platform, out_dir = map(pathlib.Path, sys.argv[1:])
(src,) = native_dir.glob("scx_slo-*.whl")
(ext,) = ext_dir.rglob("_libbpf*.so")
name, version, py_tag, abi_tag, native_platform = src.name[:-len(".whl")].split("-")
dist_info = f"{name}-{version}.dist-info/"
with zipfile.ZipFile(src) as z:
    entries = [(info, z.read(info)) for info in z.infolist()]
compiled = [info.filename for info, _ in entries if info.filename.endswith(".so")]
if len(compiled) != 1 or not compiled[0].startswith("scx_slo/loader/libbpf/_libbpf"):
    sys.exit(f"{src.name}: expected one compiled module, scx_slo/loader/libbpf/_libbpf*.so; found {compiled}")
old_tag, new_tag = (f"Tag: {py_tag}-{abi_tag}-{p}\n".encode() for p in (native_platform, platform))
out = out_dir / f"{name}-{version}-{py_tag}-{abi_tag}-{platform}.whl"
record, record_info = [], None
with zipfile.ZipFile(out, "w") as z:
    for info, data in entries:
        if info.filename == dist_info + "RECORD":
            record_info = info
            continue
        if info.filename == compiled[0]:
            # the limited API (cffi defines Py_LIMITED_API): the abi3 name holds
            data = ext.read_bytes()
        elif info.filename == dist_info + "WHEEL":
            if old_tag not in data:
                sys.exit(f"{src.name}: WHEEL has no {old_tag!r}")
            data = data.replace(old_tag, new_tag)
        z.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{info.filename},sha256={digest},{len(data)}")
    if record_info is None:
        sys.exit(f"{src.name}: no {dist_info}RECORD")
    record.append(f"{dist_info}RECORD,,")
    z.writestr(record_info, "\n".join(record) + "\n")
print(out.name, file=sys.stderr)
PY
  local n
  for n in "${binary[@]}" "${sdist[@]}"; do
    ls "$dst/${n%%==*}-${n##*==}-"*.whl >/dev/null 2>&1 || die "$a: no wheel of $n in $dst"
  done
}
pin_dev='Package: libbpf1 libbpf-dev\nPin: release n=bookworm-backports\nPin-Priority: 990\n'
for a in "${arches[@]}"; do
  [ "$a" = "$native" ] || foreign_wheels "$a"
done

# 2. Root filesystems ----------------------------------------------------------
pin='Package: libbpf1\nPin: release n=bookworm-backports\nPin-Priority: 990\n'
for a in "${arches[@]}"; do
  say "mmdebstrap $suite ($a) + bookworm-backports libbpf1 -> rootfs-$a.tar"
  mmdebstrap --mode=root --variant=essential --format=tar --architectures="$a" \
    --skip=output/dev \
    --include=python3-minimal,libpython3.11-stdlib,libbpf1,libsystemd0,libstdc++6,mount \
    --dpkgopt="$here/dpkg-nodoc.cfg" \
    --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && printf '$pin' > \"\$1/etc/apt/preferences.d/scx-slo-libbpf\"" \
    --customize-hook='mkdir -p "$1/tmp/wheels" "$1/opt/scx-slo/hostcontainer"' \
    --customize-hook="sync-in $work/wheels-$a /tmp/wheels" \
    --customize-hook="sync-in $repo/hostcontainer /opt/scx-slo/hostcontainer" \
    --customize-hook="chroot \"\$1\" python3 /tmp/wheels/$pip_whl/pip install --no-index --find-links /tmp/wheels --break-system-packages --no-cache-dir --root-user-action=ignore --disable-pip-version-check --no-warn-script-location scx-slo" \
    --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/log/* "$1"/var/cache/ldconfig/aux-cache "$1/usr/local/bin/__pycache__" "$1/usr/share/info/dir"' \
    --customize-hook='find "$1/opt/scx-slo" -name __pycache__ -prune -exec rm -rf {} +' \
    --customize-hook='rm -rf "$1"/usr/local/lib/python3*/dist-packages/scx_slo/dev' \
    --customize-hook="$here/rootfs-check.sh" \
    "$suite" "$work/rootfs-$a.tar" \
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite-backports main" \
    >&2 || die "mmdebstrap ($a) failed (see above)"
done

# 3. OCI image layout and archive --------------------------------------------
say "umoci: OCI layout, one image per architecture (one layer, entrypoint, labels)"
layout=$work/oci
umoci init --layout "$layout"
for a in "${arches[@]}"; do
  if [ ${#arches[@]} = 1 ]; then ref=$tag; else ref=$tag-$a; fi
  umoci new --image "$layout:$ref"
  umoci raw add-layer --image "$layout:$ref" \
    --history.created "$created" --history.author scx-slo \
    --history.created_by "mmdebstrap $suite ($a) + libbpf1 (bookworm-backports) + pip install scx-slo $version" \
    "$work/rootfs-$a.tar"
  umoci config --image "$layout:$ref" --no-history \
    --created "$created" --author scx-slo --os linux --architecture "$a" \
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
done
umoci gc --layout "$layout"

# umoci writes neither the manifests' nor index.json's mediaType, which the
# image-spec says SHOULD be set, nor the descriptors' platform, which an index
# of several architectures needs. Setting mediaType in a manifest changes its
# bytes, so the manifest is stored again under its new digest and index.json
# points at that (digest and size); the platform comes from the image config.
# The descriptors are listed in --arch order. Deterministic: same input, same output.
"$py" - "$layout" "${arches[@]}" <<'PY' || die "setting the manifest and index mediaType failed"
import hashlib, json, pathlib, sys
layout = pathlib.Path(sys.argv[1])
arches = sys.argv[2:]
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

def blob(digest):
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd

index_path = layout / "index.json"
index = json.loads(index_path.read_bytes())
for desc in index["manifests"]:
    if desc["mediaType"] != MANIFEST:
        sys.exit(f"index.json lists a {desc['mediaType']}, expected only image manifests")
    old_blob = blob(desc["digest"])
    manifest = with_media_type(json.loads(old_blob.read_bytes()), MANIFEST)
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    data = dump(manifest)
    new_hex = hashlib.sha256(data).hexdigest()
    if new_hex != old_blob.name:
        (layout / "blobs" / "sha256" / new_hex).write_bytes(data)
        old_blob.unlink()
    desc.update(digest=f"sha256:{new_hex}", size=len(data),
                platform={"architecture": config["architecture"], "os": config["os"]})
index["manifests"].sort(key=lambda d: arches.index(d["platform"]["architecture"]))
if [d["platform"]["architecture"] for d in index["manifests"]] != arches:
    sys.exit(f"index.json lists {[d['platform'] for d in index['manifests']]}, expected {arches}")
index_path.write_bytes(dump(with_media_type(index, INDEX)))
PY

tmp_out=$out.partial
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  --format=gnu -C "$layout" -cf "$tmp_out" oci-layout index.json blobs
mv -f "$tmp_out" "$out"

manifests=$("$py" - "$layout" <<'PY'
import json, sys
for d in json.load(open(sys.argv[1] + "/index.json"))["manifests"]:
    print(f"manifest.{d['platform']['architecture']}={d['digest']}")
PY
)
digest=$(head -n1 <<<"$manifests" | cut -d= -f2)
size=$(stat -c %s "$out")
say "image $tag (${arches[*]}): $out ($((size / 1024 / 1024)) MiB), manifests: $(tr '\n' ' ' <<<"$manifests")"
if [ ${#arches[@]} = 1 ]; then
  say "push with: skopeo copy oci-archive:$out:$tag docker://REGISTRY/scx-slo:$tag"
else
  say "push each with: skopeo copy oci-archive:$out:$tag-ARCH docker://REGISTRY/scx-slo:$tag-ARCH"
fi
echo "archive=$out"
echo "digest=$digest"
echo "$manifests"
echo "size=$size"
