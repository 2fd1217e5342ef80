#!/usr/bin/env bash
# Installs every Debian bookworm package qeval needs to build and test, when missing.
# Safe to run repeatedly; uses sudo when not root.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git ca-certificates
      libcurl4-openssl-dev nlohmann-json3-dev libyaml-cpp-dev libfmt-dev catch2
      libcli11-dev libcpp-httplib-dev libre2-dev libssl-dev libpcre2-dev libarchive-dev
      clang libclang-rt-14-dev python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
