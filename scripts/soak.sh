#!/usr/bin/env bash
# The soak: a release gateway for 30 minutes (or $1) at 20 records/s (or $2) with bad records,
# duplicates, claims, returns and feedback; prints memory, open files, threads and latencies per
# minute and fails on any loss, duplicate or steady growth.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
./target/release/shenguan soak --minutes "${1:-30}" --rate "${2:-20}"
