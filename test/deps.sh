#!/usr/bin/env bash
# Installs what lodis's tests and demo need on Debian, or says how.
set -euo pipefail
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nsenter >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)   # release signature interop test
command -v lintian >/dev/null || need+=(lintian)
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v nginx >/dev/null || need+=(nginx-light)  # supervisor chaos test and benchmark
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing: ${need[*]} — install them as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
