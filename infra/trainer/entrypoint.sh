#!/usr/bin/env bash
# Entrypoint of the training image (infra/Dockerfile): make sure the workspace holds a git
# checkout of the project, then run the command (the Prefect worker, a stage, bash …).
#
# The workspace (/workspace) is where the flows run `dvc` and the stages. Compose keeps it on
# a named volume, so the checkout, its data, models and local changes (dvc.lock, params.yaml)
# survive a rebuild of the image. The image's own copy of the repository (/opt/arcflow, with
# its .git) is where the code comes from:
#
# - no checkout yet (a new volume): check out the commit the image was built from, with the
#   git remote `image` pointing at the image's copy;
# - a checkout made here (its remote `image` is the image's copy): with
#   ARCFLOW_WORKSPACE_UPDATE=ff-only (the default) fast-forward it to the image's commit when
#   git can do so without touching local changes, otherwise say why and leave it as it is;
#   with `never`, only say which commit each side is at;
# - any other checkout (a bind-mounted one, e.g. on a training node): used as it is.
#
# ARCFLOW_SOURCE and ARCFLOW_WORKSPACE override the two paths (the tests use them).
set -euo pipefail

source_dir=${ARCFLOW_SOURCE:-/opt/arcflow}
workspace=${ARCFLOW_WORKSPACE:-/workspace}
update=${ARCFLOW_WORKSPACE_UPDATE:-ff-only}

say() { printf 'workspace: %s\n' "$*" >&2; }
short() { git -C "$1" rev-parse --short=12 "${2:-HEAD}"; }
ws() { git -C "$workspace" "$@"; }

case "$update" in
  ff-only | never) ;;
  *)
    say "ARCFLOW_WORKSPACE_UPDATE must be ff-only or never, not '$update'"
    exit 64
    ;;
esac

if [ "$#" -eq 0 ]; then
  set -- bash
fi

# The commit the image was built from (none: an image built from a tree without .git).
image_commit=$(git -C "$source_dir" rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null || true)

create_checkout() {
  if [ -z "$image_commit" ]; then
    say "no checkout in $workspace and no git repository in $source_dir to make one from:"
    say "build the image from a git clone (its .git in the build context), or mount a checkout"
    return 1
  fi
  if ! { mkdir -p "$workspace" && [ -w "$workspace" ]; }; then
    say "$workspace is not writable by uid $(id -u): give the volume to that user, e.g."
    say "docker compose run --rm --user root --entrypoint chown <service> -R $(id -u) $workspace"
    return 1
  fi
  local branch
  branch=$(git -C "$source_dir" symbolic-ref -q --short HEAD || echo image)
  # init + fetch + checkout rather than `git clone`: the directory is not empty (the DVC
  # cache volume is mounted at .dvc/cache inside it, ignored by git).
  if ws -c init.defaultBranch="$branch" init -q \
    && ws remote add image "$source_dir" \
    && ws fetch -q image HEAD \
    && ws checkout -q -B "$branch" FETCH_HEAD; then
    say "checked out $(short "$workspace") ($branch, the image's commit) into $workspace"
  else
    rm -rf "$workspace/.git"  # made just now: the next start tries again from scratch
    say "could not check out the image's commit into $workspace (git said why above)"
    return 1
  fi
}

update_checkout() {
  local head
  head=$(ws rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null || true)
  if [ -z "$head" ] || [ -z "$image_commit" ] \
    || [ "$(ws config --get remote.image.url || true)" != "$source_dir" ]; then
    say "using the checkout in $workspace as it is${head:+ (${head:0:12})}: not one of this image's"
    return 0
  fi
  if [ "$head" = "$image_commit" ]; then
    say "$workspace is at ${head:0:12}, the image's commit"
    return 0
  fi
  local from=${head:0:12} to=${image_commit:0:12}
  if ws merge-base --is-ancestor "$image_commit" "$head" 2>/dev/null; then
    say "$workspace is at $from, ahead of the image's $to: kept"
    return 0
  fi
  if [ "$update" = never ]; then
    say "$workspace stays at $from; the image has $to (ARCFLOW_WORKSPACE_UPDATE=never)."
    say "to update: git -C $workspace pull --ff-only image HEAD"
    return 0
  fi
  if ws fetch -q image HEAD && ws merge -q --ff-only FETCH_HEAD; then
    say "fast-forwarded $workspace from $from to the image's $to"
  else
    say "WARNING: $workspace stays at $from: git cannot fast-forward it to the image's $to"
    say "(diverged history, or local changes to files the new commit changes; see git above)."
    say "Keep or drop them (git -C $workspace diff; git -C $workspace checkout -- <file>),"
    say "then: git -C $workspace pull --ff-only image HEAD"
  fi
}

if [ -e "$workspace/.git" ]; then
  update_checkout
else
  create_checkout || exit 1
fi

exec "$@"
