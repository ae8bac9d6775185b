#!/usr/bin/env bash
# pos-p2p's file transfer vs sendme (iroh) vs the raw pos-p2p stream, on
# loopback, in one run (benches/src/bin/transfer.rs says what is measured).
# Installs sendme with cargo (once, under target/tools) unless SENDME names
# a binary. Arguments go to the harness: --rounds 5, --only large, ...
set -euo pipefail
cd "$(dirname "$0")/.."
SENDME_VERSION=0.37.1
if [ -z "${SENDME:-}" ]; then
    SENDME=target/tools/bin/sendme
    if [ ! -x "$SENDME" ]; then
        echo "installing sendme $SENDME_VERSION with cargo (a few minutes, once)" >&2
        cargo install sendme --locked --version "$SENDME_VERSION" --root target/tools
    fi
fi
cargo build --release -p pos-p2p-cli -p pos-p2p-benches --bin pos-p2p --bin transfer
exec target/release/transfer --pos-p2p target/release/pos-p2p --sendme "$SENDME" "$@"
