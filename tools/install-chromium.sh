#!/usr/bin/env bash
# The report's browser tests drive the system's Chromium through Playwright (Playwright's own
# browser download does not work on these machines). Installs the Debian/Ubuntu package `chromium`
# when no Chromium is on PATH; does nothing when one is. Used by .ci/run and the README's test command.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "the browser tests need Chromium on PATH (chromium or chromium-browser); install it with" \
        "your system's package manager" >&2
    exit 1
fi
echo "== installing chromium (apt-get)"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
