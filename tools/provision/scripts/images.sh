#!/usr/bin/env bash
# Build the processor and worker images at the current git commit and put them on every K3s node.
#   1. tag: the commit (12 hex digits); a tree with uncommitted changes is refused, since the tag
#      would not name the code inside the image
#   2. build with the existing multi-stage Dockerfiles, using CA4_IMAGE_TOOL or whichever of
#      docker, podman, buildah is on PATH (an image that already exists is not rebuilt)
#   3. ship: save each image to .ca4/<ENV>/images/ and `k3s ctr images import` it on every node
#      through the bastion, skipping nodes that already hold it (no registry needed)
#   4. record the tag in .ca4/<ENV>/image-tag: `make ca4-deploy-app` deploys exactly that tag
# Idempotent: a second run at the same commit builds, ships and writes nothing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGISTRY="${CA4_IMAGE_REGISTRY:-ghcr.io/ca4-project}"
SERVICES=(processor worker)

tool="${CA4_IMAGE_TOOL:-}"
if [[ -z "${tool}" ]]; then
  for candidate in docker podman buildah; do
    if command -v "${candidate}" >/dev/null 2>&1; then
      tool="${candidate}"
      break
    fi
  done
fi
if [[ -z "${tool}" ]] || ! command -v "${tool}" >/dev/null 2>&1; then
  die "missing tool: ${tool:-docker, podman or buildah} (install one to build the images, or set CA4_IMAGE_TOOL)"
fi

[[ -z "$(git -C "${CA4_REPO_ROOT}" status --porcelain --untracked-files=no)" ]] ||
  die "uncommitted changes: commit them first, the image tag is the git commit"
tag="$(git -C "${CA4_REPO_ROOT}" rev-parse --short=12 HEAD)"

image_exists() {
  if [[ "${tool}" == buildah ]]; then
    buildah inspect --type image "$1" >/dev/null 2>&1
  else
    "${tool}" image inspect "$1" >/dev/null 2>&1
  fi
}

build() {
  local service="$1" ref="$2"
  if image_exists "${ref}"; then
    log "${ref}: already built, unchanged"
    return 0
  fi
  log "${ref}: building with ${tool}"
  local verb=build
  [[ "${tool}" == buildah ]] && verb=bud
  "${tool}" "${verb}" -f "${CA4_REPO_ROOT}/services/${service}/Dockerfile" -t "${ref}" "${CA4_REPO_ROOT}"
}

# save REF FILE: a docker-archive of REF that `ctr images import` reads, written once.
save() {
  local ref="$1" archive="$2"
  [[ -s "${archive}" ]] && return 0
  if [[ "${tool}" == buildah ]]; then
    buildah push "${ref}" "docker-archive:${archive}.part:${ref}"
  else
    "${tool}" save -o "${archive}.part" "${ref}"
  fi
  mv "${archive}.part" "${archive}"
}

cluster_hosts

mkdir -p "${CA4_STATE_DIR}/images"
for service in "${SERVICES[@]}"; do
  ref="${REGISTRY}/ca4-${service}:${tag}"
  build "${service}" "${ref}"
  archive="${CA4_STATE_DIR}/images/ca4-${service}-${tag}.tar"
  save "${ref}" "${archive}"
  for host in "${servers[@]}" "${agents[@]}"; do
    if [[ -n "$(remote "${host}" "sudo k3s ctr -n k8s.io images ls -q name==${ref}")" ]]; then
      log "${host}: ${ref} already imported, unchanged"
    else
      log "${host}: importing ${ref}"
      remote "${host}" 'sudo k3s ctr -n k8s.io images import -' <"${archive}"
    fi
  done
done

if [[ "$(cat "${CA4_STATE_DIR}/image-tag" 2>/dev/null)" != "${tag}" ]]; then
  printf '%s\n' "${tag}" >"${CA4_STATE_DIR}/image-tag"
fi
log "images ${REGISTRY}/ca4-{processor,worker}:${tag} are on every node (make ca4-deploy-app deploys ${tag})"
