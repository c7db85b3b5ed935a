#!/usr/bin/env bash
# Installs what rebuilding the kernel object needs: the pinned nightly's rust-src and a
# bpf-linker linked against that nightly's own libLLVM (no system LLVM needed).
# Idempotent; tools go to $FLOWEXPORTER_TOOLS (default /opt/flowexporter-tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ebpf/toolchain.env
. "$here/toolchain.env"
tools=${FLOWEXPORTER_TOOLS:-/opt/flowexporter-tools}

if ! rustc "+$EBPF_TOOLCHAIN" --version | grep -q "$EBPF_NIGHTLY_DATE"; then
  echo "error: toolchain '$EBPF_TOOLCHAIN' is not the pinned nightly of $EBPF_NIGHTLY_DATE:" >&2
  rustc "+$EBPF_TOOLCHAIN" --version >&2 || true
  echo "install it (rustup toolchain install nightly-$EBPF_NIGHTLY_DATE) and set EBPF_TOOLCHAIN" >&2
  exit 1
fi
rustup "+$EBPF_TOOLCHAIN" component add rust-src >/dev/null

if "$tools/bin/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  exit 0
fi
sysroot=$(rustc "+$EBPF_TOOLCHAIN" --print sysroot)
llvm=$(ls "$sysroot"/lib/libLLVM.so.*-rust-* | head -n 1)
mkdir -p "$tools/llvm-link"
ln -sf "$llvm" "$tools/llvm-link/libLLVM.so"
LLVM_PREFIX=$sysroot RUSTFLAGS="-L native=$tools/llvm-link" \
  cargo install --locked --root "$tools" "bpf-linker@$BPF_LINKER_VERSION" \
  --no-default-features --features llvm-22
"$tools/bin/bpf-linker" --version
