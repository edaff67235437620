#!/usr/bin/env bash
# API overhead benchmark (see run.py). ROUND_SECONDS x ROUNDS per side; the defaults give 5 minutes
# of load on the API and 5 on SQL. MODEL=base for the full-size architecture (model time dominates).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --profile service -p biomedclip-api --quiet
work=$(mktemp -d /tmp/biomedclip-apibench.XXXXXX)
trap 'rm -rf "$work"' EXIT
target/pyenv/bin/python benches/api/run.py "$work" "${PGPORT:-25461}" "${APIPORT:-25490}" "${ROUND_SECONDS:-60}" "${ROUNDS:-5}" "${MODEL:-tiny}"
