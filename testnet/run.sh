#!/usr/bin/env bash
# Starts a local Mosaic testnet on 127.0.0.1: builds the release binary, creates a
# 4-validator testnet in testnet/data on the first run (later runs resume it),
# starts every validator with its log in testnet/data/node<i>/node.log, prints the
# nodes and a ready-to-paste transfer, and stops every node on Ctrl-C.
#
# Usage: testnet/run.sh [-n N] [--fresh] [--netns] [--dir DIR]
#   -n N     validators (3f+1: 4, 7, 10, ...) for a new testnet (default 4)
#   --fresh  delete the existing testnet in DIR and start a new one
#   --netns  a new testnet with each validator in its own network namespace
#            (Linux, root; partitions: docs/DEPLOY.md "Partition drills")
#   --dir    testnet folder (default testnet/data)
set -euo pipefail

cd "$(dirname "$0")/.."
validators=4
fresh=0
netns=()
dir=testnet/data
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) validators="${2:?-n needs a number}"; shift 2 ;;
        --fresh) fresh=1; shift ;;
        --netns) netns=(--netns); shift ;;
        --dir) dir="${2:?--dir needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

echo "building the release binary (the first build takes several minutes)..."
cargo build --release --locked -p mosaic-cli
bin="${CARGO_TARGET_DIR:-target}/release/mosaic"

if [[ $fresh == 1 ]]; then
    "$bin" testnet init --dir "$dir" -n "$validators" --fresh "${netns[@]}"
elif [[ ! -f "$dir/testnet.json" ]]; then
    "$bin" testnet init --dir "$dir" -n "$validators" "${netns[@]}"
else
    echo "resuming the testnet in $dir (pass --fresh to start a new one)"
    if [[ ${#netns[@]} -gt 0 ]] && ! grep -q '"netns"' "$dir/testnet.json"; then
        echo "the testnet in $dir runs on 127.0.0.1: pass --fresh --netns to replace it with one in namespaces" >&2
        exit 1
    fi
fi

echo "put mosaic on your PATH in another shell with:  export PATH=\"$(cd "$(dirname "$bin")" && pwd):\$PATH\""
exec "$bin" testnet up --dir "$dir"
