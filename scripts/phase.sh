# Sourced by .ci/run and scripts/check. `phase <name> <command...>` runs the command between a
# `== phase: <name>` line and a `-- <name>: N s` line, so the log shows where the time goes and which
# phase failed; a failing command's exit status is returned (and stops a `set -e` caller).
phase() {
  local name=$1 start=$SECONDS rc=0
  shift
  echo "== phase: $name"
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "-- $name: FAILED (exit $rc) after $((SECONDS - start)) s"
    return "$rc"
  fi
  echo "-- $name: $((SECONDS - start)) s"
}
