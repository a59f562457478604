#!/usr/bin/env bash
# Copies the console's third-party front-end files, at the versions package-lock.json pins,
# from npm's release packages into the Python package (src/hatchway/web/static/vendor/).
# These are upstream release artefacts, committed on purpose: `pip install .` then needs
# neither node nor the network (README, "Console: front-end files"). Run it after changing a
# version in package.json (`npm install --package-lock-only` first), and commit the result.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund >/dev/null
out=../src/hatchway/web/static/vendor
rm -rf "$out"
mkdir -p "$out"
cp node_modules/@xterm/xterm/lib/xterm.mjs "$out/xterm.mjs"
cp node_modules/@xterm/xterm/css/xterm.css "$out/xterm.css"
cp node_modules/@xterm/xterm/LICENSE "$out/xterm.LICENSE"
cp node_modules/@xterm/addon-fit/lib/addon-fit.mjs "$out/addon-fit.mjs"
cp node_modules/@xterm/addon-fit/LICENSE "$out/addon-fit.LICENSE"
cp node_modules/asciinema-player/dist/bundle/asciinema-player.min.js "$out/asciinema-player.min.js"
cp node_modules/asciinema-player/dist/bundle/asciinema-player.css "$out/asciinema-player.css"
cp node_modules/asciinema-player/LICENSE "$out/asciinema-player.LICENSE"
node -e '
const lock = require("./package-lock.json").packages;
const v = (p) => lock["node_modules/" + p].version;
console.log(JSON.stringify({"@xterm/xterm": v("@xterm/xterm"), "@xterm/addon-fit": v("@xterm/addon-fit"),
  "asciinema-player": v("asciinema-player")}, null, 2));' >"$out/VERSIONS.json"
echo "vendored into $out: $(ls "$out" | tr '\n' ' ')"
