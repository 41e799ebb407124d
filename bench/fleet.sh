#!/usr/bin/env bash
# The fleet benchmark: N emulated devices (100, then 1,000) update over
# Wi-Fi-speed links (10-50 KB/s each, drawn per device) from otabox, from
# otabox --gzip, and from nginx serving the same file; then the same on a
# "small board" (GOMAXPROCS=1, GOMEMLIMIT=48MiB, one core via taskset).
# Prints one table. Loopback only. Installs nginx when missing.
#
#   bench/fleet.sh [--reference path/to/updateserver.py] [--sizes "100 1000"]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true

REF="" SIZES="100 1000"
while [ $# -gt 0 ]; do
  case "$1" in
    --reference) REF=$(realpath "$2"); shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    *) echo "usage: $0 [--reference updateserver.py] [--sizes \"100 1000\"]" >&2; exit 2 ;;
  esac
done
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make -s build >/dev/null && cp otabox "$work/otabox"
go build -o "$work/fleet" ./bench/fleet

printf "| %-28s | %5s | %5s | %8s | %7s | %7s | %8s | %8s | %10s |\n" server devices done "all done" p50 p95 "CPU s" "RSS MB" "air MB"
printf "|%s|\n" "------------------------------|-------|-------|----------|---------|---------|----------|----------|-----------"
for n in $SIZES; do
  "$work/fleet" -n "$n" -server otabox -otabox "$work/otabox"
  "$work/fleet" -n "$n" -server otabox -otabox "$work/otabox" -gzip
  "$work/fleet" -n "$n" -server otabox -otabox "$work/otabox" -replicate
  "$work/fleet" -n "$n" -server nginx
  "$work/fleet" -n "$n" -server otabox -otabox "$work/otabox" -small-board
  "$work/fleet" -n "$n" -server nginx -small-board
  if [ -n "$REF" ] && [ "$n" -le 100 ]; then
    # The reference serves one device at a time: its run is bounded.
    "$work/fleet" -n "$n" -server reference -reference "$REF" -limit 10m || true
  fi
done
echo
echo "otabox $(git describe --always --dirty 2>/dev/null), $(nproc) cores, $(uname -m); 1 MB image; devices at 10-50 KB/s; loopback only."
