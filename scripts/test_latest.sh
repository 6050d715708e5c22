#!/usr/bin/env bash
# Run the test suite on the newest dependency versions a fresh install resolves today, and say which versions
# moved since the ones tested (constraints.txt). CI installs with constraints.txt, so a dependency release never
# changes what CI runs; this command is where such a release shows up first, as a clear failure with the moved
# versions printed above it. Run it on a schedule (a nightly or weekly cron job) and before moving the pins.
#
#   bash scripts/test_latest.sh                  # fresh .venv-latest, print the moved versions, run `pytest -q`
#   bash scripts/test_latest.sh --multiprocess   # also the 2-process suite (`pytest -q -m multiprocess`)
#   bash scripts/test_latest.sh --update         # if every suite run passed, write the new versions to constraints.txt
#   bash scripts/test_latest.sh -- -k loop       # extra pytest arguments after "--"
#
# Exit status: pytest's (0 when every suite run passed). The environment is rebuilt each time, so the versions
# are what a new user gets now; torch stays at the CPU build the README names (pass TORCH_SPEC to change it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${LATEST_ENV:-$ROOT/.venv-latest}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MULTIPROCESS=0
UPDATE=0
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --multiprocess) MULTIPROCESS=1 ;;
        --update) UPDATE=1 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "test_latest.sh: unknown argument '$1' (expected --multiprocess, --update or -- PYTEST_ARGS)" >&2; exit 2 ;;
    esac
    shift
done

rm -rf "$ENV_DIR"
"$PYTHON" -m venv "$ENV_DIR"
PY="$ENV_DIR/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$TORCH_SPEC"
"$PY" -m pip install -q -e "$ROOT[test]"

# The resolved set in constraints.txt's form (torch and pip left out: the README's commands name them).
resolved="$ENV_DIR/resolved.txt"
"$PY" -m pip freeze --all --exclude-editable | grep -viE '^(pip|torch)==' | sort -f > "$resolved"
"$PY" - "$ROOT/constraints.txt" "$resolved" <<'PY'
import sys

def pins(path):
    rows = (line.split("#")[0].strip() for line in open(path))
    return {name.lower(): version for name, _, version in (r.partition("==") for r in rows if "==" in r)}

tested, now = pins(sys.argv[1]), pins(sys.argv[2])
moved = [(n, tested.get(n, "-"), now.get(n, "-")) for n in sorted(tested.keys() | now.keys()) if tested.get(n) != now.get(n)]
print(f"[test_latest] {len(moved)} of {len(now)} packages differ from constraints.txt" + (":" if moved else ""))
for name, old, new in moved:
    print(f"  {name:32} {old:>16} -> {new}")
PY

cd "$ROOT"
status=0
"$ENV_DIR/bin/pytest" -q "${PYTEST_ARGS[@]}" || status=$?
if [[ $MULTIPROCESS == 1 ]]; then
    "$ENV_DIR/bin/pytest" -q -m multiprocess "${PYTEST_ARGS[@]}" || status=$?
fi
if [[ $status != 0 ]]; then
    echo "[test_latest] FAILED on the newest versions (exit $status); the packages that moved are listed above." >&2
elif [[ $UPDATE == 1 ]]; then
    { sed -n '/^#/p' constraints.txt; cat "$resolved"; } > constraints.txt.new && mv constraints.txt.new constraints.txt
    echo "[test_latest] passed; constraints.txt now holds these versions (update the README's 'Tested with' line)."
fi
exit $status
