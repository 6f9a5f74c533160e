#!/usr/bin/env bash
# Installs what a fresh machine lacks: the guest target, the Xen public
# headers used by the ABI layout check, and the host tools the net tests
# drive the guest with (ip, ping, curl, nc). Safe to run repeatedly.
set -euo pipefail
rustup target add x86_64-unknown-none >/dev/null
if [ ! -f /usr/include/xen/xen.h ] || ! command -v cc >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libxen-dev gcc >/dev/null
fi
# Debian's GRUB as a Xen PVH guest and the tools that build its test disks.
if [ ! -f /usr/lib/grub-xen/grub-i386-xen_pvh.bin ] || ! command -v mke2fs >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq grub-xen-host e2fsprogs >/dev/null
fi
if ! command -v ip >/dev/null || ! command -v ping >/dev/null || ! command -v curl >/dev/null \
  || ! command -v nc >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  # netcat-openbsd: docs/net.md's echo recipe uses its `nc -q`.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq iproute2 iputils-ping curl netcat-openbsd >/dev/null
fi
if [ ! -w /dev/kvm ]; then
  echo "warning: /dev/kvm is missing or not writable; guest tests will fail (add yourself to the 'kvm' group)" >&2
fi
