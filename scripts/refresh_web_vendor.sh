#!/usr/bin/env bash
# Refresh the web client's third-party code under imageapi/web/vendor/ from the npm registry.
# Needs npm (only here: installing, running and testing imageapi need no Node.js).
#   scripts/refresh_web_vendor.sh            # the versions pinned below
#   HLS_VERSION=1.7.4 scripts/refresh_web_vendor.sh
# npm pack checks the tarball against the registry's integrity hash; the version, that hash and
# the licence are recorded in imageapi/web/vendor/vendor.json, the licence text next to the file.
set -euo pipefail
cd "$(dirname "$0")/.."
HLS_VERSION=${HLS_VERSION:-1.7.4}
vendor=imageapi/web/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent --json "hls.js@$HLS_VERSION" > pack.json)
tarball=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["filename"])' "$work/pack.json")
integrity=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$work/pack.json")
tar -xzf "$work/$tarball" -C "$work"
mkdir -p "$vendor/hls"
# The light ES-module build: HLS with fMP4/TS, no subtitles, alternate audio or DRM (not used here).
cp "$work/package/dist/hls.light.min.mjs" "$vendor/hls/hls.light.min.mjs"
cp "$work/package/LICENSE" "$vendor/hls/LICENSE"
licence=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' "$work/package/package.json")
python3 - "$vendor/vendor.json" "$HLS_VERSION" "$integrity" "$licence" <<'PY'
import json, sys
path, version, integrity, licence = sys.argv[1:]
json.dump({"hls.js": {"version": version, "source": f"https://registry.npmjs.org/hls.js/-/hls.js-{version}.tgz",
                      "integrity": integrity, "license": licence,
                      "files": {"hls/hls.light.min.mjs": "dist/hls.light.min.mjs", "hls/LICENSE": "LICENSE"}}},
          open(path, "w"), indent=2)
open(path, "a").write("\n")
PY
echo "hls.js $HLS_VERSION ($licence) -> $vendor/hls/"
