#!/bin/bash
# Builds tests/fixtures/httpserver with the latest patch of each Go minor the offsets table covers,
# into target/fixtures/versions/go1.N/httpserver; the offsets unit tests compare the DWARF of every
# build under target/fixtures/versions/ with the built-in table (tracer-user/src/offsets_table.rs).
# Extra versions: `build-go-versions.sh 1.26.0 1.26.10` builds into go1.26.0/, go1.26.10/.
# Downloads toolchains via GOTOOLCHAIN (module proxy).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/tests/fixtures/httpserver"
build() { # version output-dir
  mkdir -p "$2"
  GOTOOLCHAIN="go$1" CGO_ENABLED=0 go build -trimpath -o "$2/httpserver" .
  echo "go$1 -> $2/httpserver"
}
if [ $# -eq 0 ]; then
  for v in 1.21.13 1.22.12 1.23.12 1.24.13 1.25.14 1.26.11; do
    build "$v" "$root/target/fixtures/versions/go$(echo "$v" | cut -d. -f1,2)"
  done
else
  for v in "$@"; do build "$v" "$root/target/fixtures/versions/go$v"; done
fi
