#!/usr/bin/env bash
# Refresh the web client's third-party code from the npm registry:
#   hls.js   -> imageapi/web/vendor/hls/   (shipped: plays HLS where the browser does not)
#   leaflet  -> imageapi/web/vendor/leaflet/ (shipped: the map page)
#   axe-core -> tests/vendor/axe-core/     (tests only: the accessibility checks)
# Needs npm (only here: installing, running and testing imageapi need no Node.js).
#   scripts/refresh_web_vendor.sh
#   HLS_VERSION=1.7.4 LEAFLET_VERSION=1.9.4 AXE_VERSION=4.14.1 scripts/refresh_web_vendor.sh
# npm pack checks each tarball against the registry's integrity hash; the version, that hash and
# the licence are recorded in the folder's vendor.json, the licence text next to the files.
set -euo pipefail
cd "$(dirname "$0")/.."
HLS_VERSION=${HLS_VERSION:-1.7.4}
LEAFLET_VERSION=${LEAFLET_VERSION:-1.9.4}
AXE_VERSION=${AXE_VERSION:-4.14.1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# vendor PACKAGE VERSION FOLDER SUBDIR FILE...: copy FILEs (paths in the package) into FOLDER/SUBDIR.
vendor() {
  local pkg=$1 version=$2 folder=$3 sub=$4
  shift 4
  rm -rf "$work/package" "$work/pack.json"
  (cd "$work" && npm pack --silent --json "$pkg@$version" > pack.json)
  local tarball
  tarball=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["filename"])' "$work/pack.json")
  tar -xzf "$work/$tarball" -C "$work"
  rm -rf "${folder:?}/$sub"
  mkdir -p "$folder/$sub"
  for f in "$@" LICENSE; do cp "$work/package/$f" "$folder/$sub/$(basename "$f")"; done
  python3 - "$folder/vendor.json" "$pkg" "$version" "$sub" "$work/pack.json" "$work/package/package.json" "$@" <<'PY'
import json, os, sys
path, pkg, version, sub, pack, manifest, *files = sys.argv[1:]
record = json.load(open(path)) if os.path.exists(path) else {}
record[pkg] = {
    "version": version,
    "source": f"https://registry.npmjs.org/{pkg}/-/{pkg}-{version}.tgz",
    "integrity": json.load(open(pack))[0]["integrity"],
    "license": json.load(open(manifest))["license"],
    "files": {f"{sub}/{os.path.basename(f)}": f for f in [*files, "LICENSE"]},
}
with open(path, "w") as fh:
    json.dump(record, fh, indent=2)
    fh.write("\n")
PY
  echo "$pkg $version -> $folder/$sub/"
}

# The light ES-module build: HLS with fMP4/TS, no subtitles, alternate audio or DRM (not used here).
vendor hls.js "$HLS_VERSION" imageapi/web/vendor hls dist/hls.light.min.mjs
# Leaflet's ES-module build and its stylesheet (no marker images: the map draws its own markers).
vendor leaflet "$LEAFLET_VERSION" imageapi/web/vendor leaflet dist/leaflet-src.esm.js dist/leaflet.css
vendor axe-core "$AXE_VERSION" tests/vendor axe-core axe.min.js
