#!/usr/bin/env bash
# Build the processor and worker images at the current git commit and put them on every K3s node.
#   1. tag: the commit (12 hex digits); a tree with uncommitted changes is refused, since the tag
#      would not name the code inside the image
#   2. build with the existing multi-stage Dockerfiles for the nodes' platform, CA4_IMAGE_PLATFORM
#      (default linux/amd64: the AMI is ubuntu-noble-24.04-amd64; an Apple Silicon laptop would
#      otherwise build arm64 images that fail on the nodes with "exec format error"), using
#      CA4_IMAGE_TOOL or whichever of docker, podman, buildah is on PATH. An image that already
#      exists for that platform is not rebuilt; one built for another platform is
#   3. ship: refuse an image whose inspected OS/architecture is not CA4_IMAGE_PLATFORM's, save it
#      to .ca4/<ENV>/images/ (one archive per platform) and `k3s ctr images import` it on every
#      node through the bastion, skipping nodes that already hold it for that platform and
#      refusing a node whose architecture (uname -m) is another (no registry needed)
#   4. record the tag in .ca4/<ENV>/image-tag: `make ca4-deploy-app` deploys exactly that tag
# Idempotent: a second run at the same commit builds, ships and writes nothing.
# CA4_IMAGES_TAG=<tag>: ship the images of an earlier tag from their archives in .ca4/<ENV>/images/
# instead of building the current commit (a rollback; a new node that lacks the running tag), and
# record it, so the next `make ca4-deploy-app` deploys it. Needs no build tool.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGISTRY="${CA4_IMAGE_REGISTRY:-ghcr.io/ca4-project}"
SERVICES=(processor worker)
# The nodes' platform (infra/terraform: ubuntu-noble-24.04-amd64); os/arch, optionally /variant.
PLATFORM="${CA4_IMAGE_PLATFORM:-linux/amd64}"
[[ "${PLATFORM}" =~ ^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$ ]] ||
  die "CA4_IMAGE_PLATFORM=${PLATFORM} is not os/arch (the nodes are linux/amd64)"
# os/arch without a variant: what image inspect and ctr report, and what is compared.
OS_ARCH="$(cut -d/ -f1-2 <<<"${PLATFORM}")"

archived_tag="${CA4_IMAGES_TAG:-}"
[[ -z "${archived_tag}" || "${archived_tag}" =~ ^[0-9a-f]{12}$ ]] ||
  die "CA4_IMAGES_TAG=${archived_tag} is not an image tag (the 12 hex digits of a commit, as helm -n app history ca4-app shows them)"

tool="${CA4_IMAGE_TOOL:-}"
if [[ -n "${archived_tag}" ]]; then
  :  # shipped from the archives: nothing is built
elif [[ -z "${tool}" ]]; then
  for candidate in docker podman buildah; do
    if command -v "${candidate}" >/dev/null 2>&1; then
      tool="${candidate}"
      break
    fi
  done
fi
if [[ -n "${archived_tag}" ]]; then
  tag="${archived_tag}"
else
  if [[ -z "${tool}" ]] || ! command -v "${tool}" >/dev/null 2>&1; then
    die "missing tool: ${tool:-docker, podman or buildah} (install one to build the images, or set CA4_IMAGE_TOOL)"
  fi
  [[ -z "$(git -C "${CA4_REPO_ROOT}" status --porcelain --untracked-files=no)" ]] ||
    die "uncommitted changes: commit them first, the image tag is the git commit"
  tag="$(git -C "${CA4_REPO_ROOT}" rev-parse --short=12 HEAD)"
fi

# image_platform REF: the os/arch of the local image REF, or nothing when there is no such image.
image_platform() {
  if [[ "${tool}" == buildah ]]; then
    buildah inspect --type image --format '{{.OCIv1.OS}}/{{.OCIv1.Architecture}}' "$1" 2>/dev/null || true
  else
    "${tool}" image inspect --format '{{.Os}}/{{.Architecture}}' "$1" 2>/dev/null || true
  fi
}

build() {
  local service="$1" ref="$2" found
  found="$(image_platform "${ref}")"
  if [[ "${found}" == "${OS_ARCH}" ]]; then
    log "${ref}: already built for ${PLATFORM}, unchanged"
    return 0
  fi
  if [[ -n "${found}" ]]; then
    log "${ref}: built for ${found}, not ${PLATFORM}: building again"
  fi
  log "${ref}: building for ${PLATFORM} with ${tool}"
  local verb=build
  [[ "${tool}" == buildah ]] && verb=bud
  "${tool}" "${verb}" --platform "${PLATFORM}" -f "${CA4_REPO_ROOT}/services/${service}/Dockerfile" \
    -t "${ref}" "${CA4_REPO_ROOT}"
  found="$(image_platform "${ref}")"
  [[ "${found}" == "${OS_ARCH}" ]] ||
    die "${ref}: ${tool} built it for ${found:-an unknown platform}, not ${PLATFORM} (the nodes' platform): nothing was imported; enable cross-building (docker: buildx with QEMU, 'docker run --privileged --rm tonistiigi/binfmt --install amd64'; podman/buildah: qemu-user-static) or build on a ${PLATFORM} machine"
}

# node_platforms HOST REF: the platforms (os/arch) HOST's containerd lists for REF, one a line
# (`ctr images ls` columns: REF TYPE DIGEST SIZE PLATFORMS LABELS; PLATFORMS is comma-separated).
node_platforms() {
  remote "$1" "sudo k3s ctr -n k8s.io images ls name==$2" | awk -v ref="$2" '$1 == ref' |
    tr -s ' ,\t' '\n' | grep -xE '(linux|windows)/[a-z0-9]+(/v[0-9]+)?' | cut -d/ -f1-2 || true
}

# node_arch HOST: HOST's architecture in the images' terms (uname -m x86_64 -> amd64).
node_arch() {
  local machine
  machine="$(remote "$1" 'uname -m')"
  case "${machine}" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) echo "${machine}" ;;
  esac
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
declare -A checked_arch=()
for service in "${SERVICES[@]}"; do
  ref="${REGISTRY}/ca4-${service}:${tag}"
  archive="${CA4_STATE_DIR}/images/ca4-${service}-${tag}-${PLATFORM//\//-}.tar"
  if [[ -n "${archived_tag}" ]]; then
    [[ -s "${archive}" ]] ||
      die "no archive of ${ref} for ${PLATFORM} (${archive}): it was built on another machine or removed; check out commit ${tag} there and run make ca4-images"
  else
    build "${service}" "${ref}"
    save "${ref}" "${archive}"
  fi
  for host in "${servers[@]}" "${agents[@]}"; do
    platforms="$(node_platforms "${host}" "${ref}")"
    if grep -qxF -- "${OS_ARCH}" <<<"${platforms}"; then
      log "${host}: ${ref} already imported for ${PLATFORM}, unchanged"
      continue
    fi
    if [[ -z "${checked_arch[${host}]:-}" ]]; then
      arch="$(node_arch "${host}")"
      [[ "linux/${arch}" == "${OS_ARCH}" ]] ||
        die "${host}: the node is linux/${arch}, the images are ${PLATFORM}: set CA4_IMAGE_PLATFORM=linux/${arch} and run 'make ca4-images' again"
      checked_arch[${host}]=1
    fi
    if [[ -n "${platforms}" ]]; then
      log "${host}: ${ref} is there for $(tr '\n' ' ' <<<"${platforms}")only, not ${PLATFORM}: importing again"
    else
      log "${host}: importing ${ref} (${PLATFORM})"
    fi
    remote "${host}" 'sudo k3s ctr -n k8s.io images import -' <"${archive}"
  done
done

if [[ "$(cat "${CA4_STATE_DIR}/image-tag" 2>/dev/null)" != "${tag}" ]]; then
  printf '%s\n' "${tag}" >"${CA4_STATE_DIR}/image-tag"
fi
log "images ${REGISTRY}/ca4-{processor,worker}:${tag} are on every node (make ca4-deploy-app deploys ${tag})"
