# The Python virtualenv of the tests and of packaging, sourced by scripts/test and scripts/package:
# .venv-test/, every package pinned by scripts/requirements-test.txt.
venv=.venv-test
reqs=scripts/requirements-test.txt
# Rebuilt only when the requirements changed: the venv keeps a copy of the file it was built from,
# written last, so a half-built venv never counts as ready.
if ! { [ -x "$venv/bin/python" ] && cmp -s "$reqs" "$venv/requirements-test.txt"; }; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 is missing; the tests and packaging need it for $venv ($reqs). Install Python 3 with its venv module." >&2
        exit 1
    fi
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        echo "error: \`python3 -m venv $venv\` failed; install Python's venv module (on Debian/Ubuntu: python3-venv)." >&2
        exit 1
    fi
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$reqs"; then
        rm -rf "$venv"
        echo "error: installing $reqs into $venv failed (see pip's output above); the tests and packaging need it." >&2
        exit 1
    fi
    cp "$reqs" "$venv/requirements-test.txt"
    echo "built $venv from $reqs"
fi
