#!/usr/bin/env bash
# Installs Debian's headless Chromium and its driver for the browser tests (tests marked `browser`).
# Idempotent: does nothing when both are installed. Always exits 0, because a machine that cannot
# install them (not root, no apt, no registry) should still run the test suite: the browser tests
# then skip with a reason instead of the whole run failing here.
set -u

packages=(chromium chromium-driver)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_browser: chromium and chromium-driver already installed ($(command -v chromium || echo '/usr/bin/chromium missing?'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: not root; not installing ${missing[*]} (browser tests will be skipped)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; not installing ${missing[*]} (browser tests will be skipped)"
    exit 0
fi

echo "install_browser: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
if apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    echo "install_browser: installed ${missing[*]}: $(chromium --version 2>/dev/null || echo 'version unknown')"
else
    echo "install_browser: apt-get failed; browser tests will be skipped"
fi
exit 0
