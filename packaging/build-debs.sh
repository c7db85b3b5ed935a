#!/usr/bin/env bash
# Builds the Debian packages flowexporter and flowcollector into target/debian/
# (docs/packaging.md):
#
#   packaging/build-debs.sh            # release binaries, as shipped
#   packaging/build-debs.sh --profile dev --no-build --out DIR --fast   # the package test
#
# 1. builds both binaries with the profile (release unless --profile; --no-build
#    packages those already in <target>/<profile>/, as `cargo test` left them);
# 2. makes their manual pages and shell completions with their hidden `generate`
#    subcommand, from the same clap definitions as --help, into
#    <target>/<profile>/packaging/;
# 3. runs cargo-deb on each, without building again (--no-build), into --out
#    (target/debian/ by default), and prints the paths of the two .deb files.
#
# cargo-deb 3.8.0: `cargo deb` when it is on PATH, else the copy .ci/run installs
# into $HOME/.cache/flowexporter/cargo-deb (or the one named by $CARGO_DEB).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=
fast=()
build=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    # Lighter compression of the .deb (same contents): for the test.
    --fast) fast=(--fast); shift ;;
    --no-build) build=no; shift ;;
    *) echo "usage: $0 [--profile PROFILE] [--out DIR] [--fast] [--no-build]" >&2; exit 2 ;;
  esac
done

cargo_deb=${CARGO_DEB:-}
if [ -z "$cargo_deb" ]; then
  if command -v cargo-deb >/dev/null; then
    cargo_deb=$(command -v cargo-deb)
  else
    cargo_deb="$HOME/.cache/flowexporter/cargo-deb/bin/cargo-deb"
  fi
fi
if ! "$cargo_deb" --version >/dev/null 2>&1; then
  echo "build-debs.sh: cargo-deb not found ($cargo_deb). Install it with:" >&2
  echo "  cargo install cargo-deb --version 3.8.0 --locked --root \$HOME/.cache/flowexporter/cargo-deb" >&2
  exit 1
fi

target=${CARGO_TARGET_DIR:-$PWD/target}
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
bin="$target/$profile_dir"
out=${out:-$target/debian}

if [ "$build" = yes ]; then
  cargo build --profile "$profile" -p flowexporter-bin -p flowcollector --bins
fi
for name in flowexporter flowcollector; do
  if [ ! -x "$bin/$name" ]; then
    echo "build-debs.sh: $bin/$name is missing (build it, or drop --no-build)" >&2
    exit 1
  fi
done

generated="$bin/packaging"
for name in flowexporter flowcollector; do
  rm -rf "$generated/$name"
  mkdir -p "$generated/$name/completions"
  "$bin/$name" generate man "$generated/$name/man"
  # Compressed as Debian policy wants (cargo-deb leaves files under target/ as they are).
  gzip -9n "$generated/$name/man"/*.1
  "$bin/$name" generate completions bash >"$generated/$name/completions/$name.bash"
  "$bin/$name" generate completions zsh >"$generated/$name/completions/_$name"
  "$bin/$name" generate completions fish >"$generated/$name/completions/$name.fish"
done

mkdir -p "$out"
for package in flowexporter-bin flowcollector; do
  "$cargo_deb" --no-build --profile "$profile" -p "$package" --output "$out" "${fast[@]}"
done
