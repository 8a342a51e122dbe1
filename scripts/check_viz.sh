#!/usr/bin/env bash
# Runs the search-tree viewer tests with a real headless browser: installs Debian's chromium when it
# is missing (the browser test skips without it), then runs tests/test_viz.py only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    # A fresh container may have no package lists yet: update once, only if the first try fails.
    $sudo apt-get install -y chromium || { $sudo apt-get update && $sudo apt-get install -y chromium; }
fi

python=python
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
"$python" -m pytest tests/test_viz.py -q "$@"
