#!/usr/bin/env bash
# Rebuilds the kernel object ebpf/flowexporter.bpf.o from ebpf/flow-ebpf, byte for byte
# reproducibly: pinned nightly, pinned bpf-linker, and the sources copied to one fixed
# folder before building (cargo hashes absolute paths and flags into symbol names, so
# building in place would make the bytes depend on where the checkout lives).
#   ebpf/build-object.sh          rebuild and replace the committed object
#   ebpf/build-object.sh --check  rebuild and fail if it differs from the committed one
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ebpf/toolchain.env
. "$here/toolchain.env"
tools=${FLOWEXPORTER_TOOLS:-/opt/flowexporter-tools}
mode=${1:-build}

"$here/install-toolchain.sh"
sysroot=$(rustc "+$EBPF_TOOLCHAIN" --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
build_root=/tmp/flowexporter-ebpf-build
rm -rf "$build_root/ebpf"
mkdir -p "$build_root/ebpf"
tar -C "$here" --exclude=target -cf - flow-common flow-ebpf | tar -C "$build_root/ebpf" -xf -
target_dir="$build_root/target"

export PATH="$tools/bin:$PATH"
export CARGO_ENCODED_RUSTFLAGS=$(printf '%s\x1f' \
  --cfg 'bpf_target_arch="x86_64"' \
  -Cdebuginfo=2 -Clink-arg=--btf \
  "--remap-path-prefix=$build_root/ebpf=/flowexporter/ebpf" \
  "--remap-path-prefix=$cargo_home=/cargo" \
  "--remap-path-prefix=$sysroot=/rust" | sed 's/\x1f$//')
(cd "$build_root/ebpf/flow-ebpf" && cargo "+$EBPF_TOOLCHAIN" build --locked --release \
  --target bpfel-unknown-none -Z build-std=core --target-dir "$target_dir")
built="$target_dir/bpfel-unknown-none/release/flowexporter"
object="$here/flowexporter.bpf.o"

case "$mode" in
  --check)
    if ! cmp -s "$built" "$object"; then
      echo "error: ebpf/flowexporter.bpf.o is not what ebpf/flow-ebpf builds to." >&2
      echo "Run ebpf/build-object.sh and commit the object." >&2
      sha256sum "$built" "$object" >&2 || true
      exit 1
    fi
    echo "ebpf/flowexporter.bpf.o matches its source ($(sha256sum "$object" | cut -c1-16))"
    ;;
  build)
    cp "$built" "$object"
    echo "wrote ebpf/flowexporter.bpf.o ($(stat -c %s "$object") bytes, sha256 $(sha256sum "$object" | cut -c1-16))"
    ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
