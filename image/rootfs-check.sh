#!/bin/sh
# mmdebstrap customize hook (image/build.sh): $1 is the root filesystem being
# built. Fails the build unless the agent starts and finds its libraries.
set -eu
root=$1
chroot "$root" scx-slo --version
chroot "$root" python3 -c 'import cffi, elftools, tomlkit, systemd.journal, scx_slo'
# The development tooling (scx_slo.dev) is left out; the agent must not need it.
chroot "$root" python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("scx_slo.dev") is not None)' \
  || { echo "rootfs-check: scx_slo.dev is in the image" >&2; exit 1; }
chroot "$root" python3 -c 'import scx_slo.agent.loop, scx_slo.commands.run'
# Every compiled module of the installed packages must resolve its shared
# libraries inside the image (libbpf.so.1 from libbpf1, libsystemd.so.0, ...).
for so in $(cd "$root" && find usr/local/lib -name '*.so'); do
  if chroot "$root" ldd "/$so" | grep 'not found'; then
    echo "rootfs-check: /$so has unresolved libraries" >&2; exit 1
  fi
done
v=$(chroot "$root" dpkg-query -W -f='${Version}' libbpf1)
chroot "$root" dpkg --compare-versions "$v" ge 1:1.4 \
  || { echo "rootfs-check: libbpf1 $v is older than 1.4" >&2; exit 1; }
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' libbpf1 python3-minimal libsystemd0
[ -x "$root/opt/scx-slo/hostcontainer/start" ] || { echo "rootfs-check: no entrypoint" >&2; exit 1; }
