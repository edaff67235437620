#!/usr/bin/env bash
# DICOM rendering and slide patching benchmark (not a test): builds examples/medical_bench.rs and
# runs benches/medical_images/run.py, which writes benches/medical_images/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release -q -p biomedclip-core --example medical_bench
work=$(mktemp -d /tmp/biomedclip-medbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
target/pyenv/bin/python benches/medical_images/run.py "$(pwd)/target/release/examples/medical_bench" "$work"
