#!/usr/bin/env bash
# Run a benchmark from a clean checkout of a commit, so edits in the working tree
# cannot leak into it and its results name a clean commit:
#
#   bash benchmarks/frozen_run.sh [--commit SHA] -- python benchmarks/scale.py --work "$PWD/runs/bench-scale"
#
# The checkout is a git worktree under runs/frozen/<sha>, with the package installed
# into runs/frozen/<sha>/.site (non-editable, first on PYTHONPATH, so child processes
# use it too); a sitecustomize there removes this environment's editable-install finder,
# so a module the frozen copy lacks fails to import instead of coming from the working
# tree. `flwr run` takes the package's parent folder as the Flower app, so the project's
# pyproject.toml is copied there. Results land in the checkout's benchmarks/results/:
# copy them back and commit them. Give --work an absolute path to reuse cached pieces.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
commit=HEAD
if [[ "${1:-}" == "--commit" ]]; then commit=$2; shift 2; fi
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then
  echo "usage: bash benchmarks/frozen_run.sh [--commit SHA] -- COMMAND..." >&2
  exit 2
fi
sha=$(git -C "$repo" rev-parse --short "$commit")
wt=$repo/runs/frozen/$sha
if [[ ! -d $wt/.site ]]; then
  [[ -d $wt ]] || git -C "$repo" worktree add --detach "$wt" "$sha" >/dev/null
  rm -rf "$wt/.site.tmp"
  python -m pip install -q --no-deps --no-build-isolation --target "$wt/.site.tmp" "$wt" >/dev/null
  cat > "$wt/.site.tmp/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
PY
  cp "$wt/pyproject.toml" "$wt/.site.tmp/rantune/pyproject.toml"
  mv "$wt/.site.tmp" "$wt/.site"
fi
echo "frozen checkout: $wt (commit $sha)" >&2
cd "$wt"
export PYTHONPATH="$wt/.site${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
