#!/usr/bin/env bash
# OS packages the workflow and its tests need, Debian/Ubuntu, as root:
#   bwrap  bubblewrap, the code sandbox;
#   g++    DeepSpeed compiles its CPU communication op at first use (ZeRO-3 on CPU: the
#          paper-shaped test run, tests/paper_shaped.py). GPU clusters do not need it here.
set -euo pipefail
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} = 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing OS packages: ${missing[*]}; install them with your OS package manager" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
