#!/usr/bin/env bash
# OS packages the workflow needs: bubblewrap (the code sandbox). Debian/Ubuntu, as root.
set -euo pipefail
if command -v bwrap >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "bubblewrap (bwrap) is missing: install it with your OS package manager" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap
