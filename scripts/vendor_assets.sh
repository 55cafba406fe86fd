#!/usr/bin/env bash
# Reproduce, or update, the Swagger UI and Redoc files that /docs and /redoc serve from the
# package (src/submitter/api/static): they are vendored so that the docs work offline.
#
#   scripts/vendor_assets.sh                  # the versions in */VERSION, checked against SHA256SUMS
#   SWAGGER_UI_VERSION=5 REDOC_VERSION=2 scripts/vendor_assets.sh --update
#                                             # the newest 5.x / 2.x; rewrites VERSION and SHA256SUMS
#
# Needs npm (only to fetch the packages from the registry; nothing is built) and sha256sum.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
static=$root/src/submitter/api/static
update=false
[[ ${1:-} == --update ]] && update=true
swagger=${SWAGGER_UI_VERSION:-$(cat "$static/swagger/VERSION")}
redoc=${REDOC_VERSION:-$(cat "$static/redoc/VERSION")}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "swagger-ui-dist@$swagger" "redoc@$redoc" >/dev/null
mkdir swagger redoc
tar xzf swagger-ui-dist-*.tgz -C swagger
tar xzf redoc-*.tgz -C redoc
version() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$1"; }

mkdir -p "$static/swagger" "$static/redoc"
cd swagger/package
install -m 644 swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css \
    favicon-32x32.png LICENSE NOTICE "$static/swagger/"
version package.json >"$static/swagger/VERSION"
cd ../../redoc/package
install -m 644 bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE \
    "$static/redoc/"
version package.json >"$static/redoc/VERSION"

cd "$static"
if $update; then
    sha256sum swagger/* redoc/* >SHA256SUMS
    echo "vendored swagger-ui-dist $(cat swagger/VERSION), redoc $(cat redoc/VERSION); update README.md"
else
    sha256sum --check --quiet SHA256SUMS
    echo "reproduced swagger-ui-dist $(cat swagger/VERSION), redoc $(cat redoc/VERSION): identical"
fi
