#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Install what imgfs needs to build and test on Debian 12 (as root);
# with --bench, also what bench/pull and bench/fs compare against.
# clang and libclang-rt-14-dev (libFuzzer, the sanitizer runtimes) are for
# bench/fuzz and the -DIMGFS_FUZZ=ON build (docs/testing.md).
set -e
export DEBIAN_FRONTEND=noninteractive
packages="build-essential cmake pkg-config clang-format clang libclang-rt-14-dev
  libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev zlib1g-dev libarchive-dev libjansson-dev liblmdb-dev
  docker-registry skopeo umoci busybox-static zstd python3 attr curl util-linux
  apache2-utils acl strace"
if [ "${1:-}" = --bench ]; then
  packages="$packages containerd debootstrap fuse-overlayfs bc time e2fsprogs"
fi
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing
fi
