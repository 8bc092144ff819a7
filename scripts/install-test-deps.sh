#!/usr/bin/env bash
# System packages the test suite needs, installed once: Debian's Chromium and ChromeDriver for
# the browser tests of the web chat page. A no-op when they are there; without apt (or without
# root) it says so and the browser tests skip themselves.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: no apt-get and no /usr/bin/chromium; browser tests will skip" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install-test-deps: not root, cannot install chromium; browser tests will skip" >&2
        exit 0
    fi
else
    SUDO=()
fi
echo "install-test-deps: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
