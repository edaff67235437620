#!/usr/bin/env bash
# Builds Citus 13.2.2 from ../shared/peers into the system PostgreSQL 15 (for the Citus suite and
# benchmark), unless that version is installed already. Citus is AGPL: it is built in a temporary
# directory and never copied into this repository. About 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARCHIVE="$ROOT/../shared/peers/citus-13.2.2.tar.gz"
SHA256=c8fc76dc8294636a52b1a0dd75a20d8b4a36937df6443e30ca84d8d0464a6bb9
libdir=$(pg_config --pkglibdir)
sharedir=$(pg_config --sharedir)
if [ -f "$libdir/citus.so" ] && grep -q "^default_version = '13.2-" "$sharedir/extension/citus.control" 2>/dev/null \
   && grep -aq "13\.2\.2" "$libdir/citus.so"; then
  exit 0
fi
need_apt=()
for p in libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "citus: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
echo "$SHA256  $ARCHIVE" | sha256sum -c --quiet -
work=$(mktemp -d /tmp/biomedclip-citus-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -xzf "$ARCHIVE" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
echo "citus: building 13.2.2 into the system PostgreSQL 15 (about 2 minutes)"
(cd "$src" && ./configure -q PG_CONFIG=/usr/bin/pg_config --without-libcurl >/dev/null && make -s -j"$(nproc)" >/dev/null 2>&1 && make -s install >/dev/null 2>&1)
echo "citus: installed"
