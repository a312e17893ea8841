#!/usr/bin/env bash
# Installs what the build and the tests need from Debian's packages when it
# is missing. Runs as root on CI and fresh machines (apt-get install -y);
# as another user it only reports what is missing.
set -eu
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_hdr() { [ -f "/usr/include/$1" ] || [ -f "/usr/include/x86_64-linux-gnu/$1" ]; }

have_cmd make || need+=(make)
have_cmd gcc || need+=(gcc)
have_cmd clang || need+=(clang)
# libFuzzer and the sanitizer runtimes for clang.
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-dev)
have_hdr uv.h || need+=(libuv1-dev)
have_cmd redis-cli || need+=(redis-tools)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import redis' >/dev/null 2>&1 || need+=(python3-redis)
/usr/bin/python3 -c 'import pytest' >/dev/null 2>&1 || need+=(python3-pytest)
# ip(8) for the Jepsen tests' network namespaces (root only; without it they
# fall back to in-process partitions).
[ "$(id -u)" -ne 0 ] || have_cmd ip || need+=(iproute2)
# The full-disk e2e test's loop-mounted ext4 images (root only; skipped
# without them): mkfs.ext4/resize2fs/e2fsck, mount, unshare.
[ "$(id -u)" -ne 0 ] || have_cmd mkfs.ext4 || need+=(e2fsprogs)
[ "$(id -u)" -ne 0 ] || have_cmd mount || need+=(mount)
[ "$(id -u)" -ne 0 ] || have_cmd unshare || need+=(util-linux)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
echo "deps: installing ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: not root; please run: apt-get install -y ${need[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null
echo "deps: done"
