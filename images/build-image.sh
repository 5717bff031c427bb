#!/usr/bin/env bash
# Builds one of the project's images (operator, launcher, examples) as REF:
#   images/build-image.sh NAME REF
# With Docker where an engine answers and the Dockerfile's base image can be had (Docker has it, or
# pulls it); elsewhere (no engine, or no registry within reach) with buildah from the same Dockerfile on
# a local Debian base (images/build-local.sh). Where an engine answers, buildah's archive is then loaded
# into it, so `docker run` and `kind load docker-image` find the image either way.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
name="${1:?usage: build-image.sh operator|launcher|examples REF}"
ref="${2:?usage: build-image.sh NAME REF}"
docker_cli="${DOCKER:-docker}"

case "$name" in
  operator) context=.; variable=OPERATOR_IMAGE ;;
  launcher) context=images/launcher; variable=LAUNCHER_IMAGE ;;
  examples) context=images/examples; variable=EXAMPLES_IMAGE ;;
  *) echo "build-image.sh: unknown image $name" >&2; exit 2 ;;
esac
dockerfile="images/$name/Dockerfile"
# The base: the default of the Dockerfile's first ARG naming an image (PYTHON_IMAGE or GO_IMAGE).
base="$(awk -F= '/^ARG (PYTHON|GO)_IMAGE=/ {print $2; exit}' "$repo/$dockerfile")"

cd "$repo"
if "$docker_cli" info >/dev/null 2>&1; then
  if "$docker_cli" image inspect "$base" >/dev/null 2>&1 || "$docker_cli" pull -q "$base" >/dev/null 2>&1; then
    echo "Docker engine found: $docker_cli build"
    exec "$docker_cli" build -f "$dockerfile" -t "$ref" "$context"
  fi
  echo "Docker engine found, but not its base image $base (no registry): building with buildah"
  env "$variable=$ref" "$here/build-local.sh" build "$name"
  archive="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}/images/$(basename "${ref%%:*}")-${ref##*:}.tar"
  # Docker's image ID is the archive's config digest: load only what Docker does not hold yet.
  if [[ "$("$docker_cli" image inspect -f '{{.Id}}' "$ref" 2>/dev/null)" != "$(env "$variable=$ref" "$here/build-local.sh" id "$name")" ]]; then
    "$docker_cli" load -q -i "$archive"
  fi
else
  echo "No Docker engine: building with buildah (images/build-local.sh)"
  env "$variable=$ref" "$here/build-local.sh" build "$name"
fi
