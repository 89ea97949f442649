#!/usr/bin/env bash
# Install the Debian packages vmforge builds and tests with; does nothing when
# they are all present.  Run as root on Debian 12 (bookworm) or newer.
set -euo pipefail

PACKAGES=(
    # build: Python with venv and headers, a C compiler
    python3 python3-venv python3-dev gcc make
    # libcrypto's headers: the LUKS sector cipher (src/_fast/sector_cipher.pyx)
    libssl-dev
    # oracles and real software to test against
    qemu-utils qemu-system-misc qemu-system-x86
    gcc-riscv64-unknown-elf opensbi u-boot-qemu busybox-static device-tree-compiler cpio iproute2 iputils-ping libslirp0 e2fsprogs cryptsetup-bin gdb-multiarch
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: missing Debian packages: ${missing[*]} (run as root to install)" >&2
    exit 1
fi
echo "setup-host: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# wait (up to 10 minutes) for the dpkg and apt locks another apt-get may hold
apt_get=(apt-get -o DPkg::Lock::Timeout=600)
"${apt_get[@]}" update -qq
"${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
