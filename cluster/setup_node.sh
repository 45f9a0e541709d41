#!/usr/bin/env bash
# The Python environment of a cluster node: a virtual environment holding rakuten-ray
# (editable, from the repository that cluster.yaml syncs to ~/rakuten-ray) and its pinned
# dependencies.
#
# cluster.yaml runs this on every node as it starts. The dependencies (torch with CUDA,
# transformers, timm, Ray: gigabytes of wheels) are installed only when the environment does
# not already hold them for this pyproject.toml, as recorded by a stamp file. Run it once on an
# instance of the node image (see docs/cluster.md, "Fast node start") and save that disk as
# the node image: every node started from it then only checks the stamp, in a second.
set -euo pipefail

repo="${1:-$HOME/rakuten-ray}"
venv="${RAKUTEN_VENV:-$HOME/venv}"
stamp="$venv/.rakuten-ray-deps"
wanted="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"

test -x "$venv/bin/python" || python3 -m venv "$venv"
# Ray runs its commands in login shells: they must use this environment's Python.
grep -qs "$venv/bin/activate" "$HOME/.bashrc" || echo "source $venv/bin/activate" >> "$HOME/.bashrc"

if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    # The editable install points at $repo, which the cluster launcher keeps in sync.
    echo "rakuten-ray: dependencies already installed for this pyproject.toml"
    exit 0
fi
"$venv/bin/pip" install -q -U pip
"$venv/bin/pip" install -q -e "$repo"
echo "$wanted" > "$stamp"
echo "rakuten-ray: dependencies installed"
