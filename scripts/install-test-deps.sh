#!/usr/bin/env bash
# System packages the test suite needs, installed once with apt-get: a no-op when they are all
# there. Without apt-get (or without root) it says so and the tests that need them skip
# themselves with one line.
#
# Each entry: the file that shows the package is installed, then the Debian package.
#   chromium, chromium-driver  the browser tests of the web chat page
#   bubblewrap                 the exec tool's sandbox (tests/tools/test_exec.py)
set -euo pipefail

NEEDED=(
    "/usr/bin/chromium chromium"
    "/usr/bin/chromedriver chromium-driver"
    "/usr/bin/bwrap bubblewrap"
)

missing=()
for entry in "${NEEDED[@]}"; do
    read -r file package <<<"$entry"
    [ -e "$file" ] || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: no apt-get; not installed: ${missing[*]} (their tests will skip)" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install-test-deps: not root; not installed: ${missing[*]} (their tests will skip)" >&2
        exit 0
    fi
else
    SUDO=()
fi
echo "install-test-deps: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
