# The Python virtualenvs of the tests and of packaging, sourced by scripts/test and scripts/package,
# and by a person alone (`. scripts/venv.sh` from the repository's root; docs/DEPLOY.md's rehearsal).
# `ensure_venv DIR REQS` builds DIR from REQS (every package pinned); sourcing this file builds the
# test venv .venv-test/ from scripts/requirements-test.txt and sets $venv and $reqs to it.
# Failures `return`, never `exit`: sourced in an interactive shell, an exit would close it.

# Rebuilt only when the requirements changed: the venv keeps a copy of the file it was built from,
# written last, so a half-built venv never counts as ready.
ensure_venv() {
    local dir=$1 file=$2
    if { [ -x "$dir/bin/python" ] && cmp -s "$file" "$dir/requirements.txt"; }; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 is missing; the tests and packaging need it for $dir ($file). Install Python 3 with its venv module." >&2
        return 1
    fi
    rm -rf "$dir"
    if ! python3 -m venv "$dir"; then
        rm -rf "$dir"
        echo "error: \`python3 -m venv $dir\` failed; install Python's venv module (on Debian/Ubuntu: python3-venv)." >&2
        return 1
    fi
    if ! "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$file"; then
        rm -rf "$dir"
        echo "error: installing $file into $dir failed (see pip's output above); the tests and packaging need it." >&2
        return 1
    fi
    cp "$file" "$dir/requirements.txt"
    echo "built $dir from $file"
}

venv=.venv-test
reqs=scripts/requirements-test.txt
if [ -f "$reqs" ]; then
    ensure_venv "$venv" "$reqs"
else
    echo "error: $reqs is not here; source scripts/venv.sh from the repository's root." >&2
    false
fi
