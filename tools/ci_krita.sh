#!/usr/bin/env bash
# Install what the real-Krita end-to-end test (tests/e2e/test_krita_e2e.py) needs on Debian 12:
# Krita 5.1 from apt, the PyQt5/sip that pykrita needs (only Recommends of krita, so named here),
# Xvfb for a headless display, and pyzmq/msgpack for Krita's system Python 3.11.
# Usage (as root, or with sudo available): bash tools/ci_krita.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v apt-get >/dev/null; then
    echo "ci_krita.sh: apt-get not found; install Krita, PyQt5, Xvfb and pyzmq/msgpack for Krita's Python" >&2
    exit 1
fi
$sudo apt-get update
packages=(krita python3-pyqt5 xvfb xauth python3-zmq python3-msgpack)
# Debian 12 ships sip as python3-sip; Debian 13 folded it into python3-pyqt5.sip (a dependency).
if apt-cache show python3-sip >/dev/null 2>&1; then
    packages+=(python3-sip)
fi
$sudo apt-get install -y --no-install-recommends "${packages[@]}"
dpkg-query -W krita xvfb python3-pyqt5 python3-zmq python3-msgpack   # `krita --version` needs a display
