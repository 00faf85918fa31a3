#!/usr/bin/env bash
# Provides a real Sendmail for the milter interop tests on a machine that also has Debian's exim4:
# sendmail-bin conflicts with exim4 (both provide mail-transport-agent), so it is never installed.
# This script downloads Debian's sendmail-bin and sendmail-cf .debs and unpacks them (dpkg-deb -x)
# into a private tree that test/helpers/sendmail.ts runs with a private sendmail.cf (built with m4
# from the cf/ macros), queue and log per test file.
# Owns: that tree (default /opt/sello-test/sendmail, or $SELLO_SENDMAIL_ROOT) and installing the
# *shared libraries* sendmail links against (and m4, which builds sendmail.cf).
# Must not: install or configure the sendmail packages, touch /etc/mail, start any daemon, or
# change exim4. Idempotent (refetches when apt's candidate changed). Needs root. Usage:
#   test/interop/setup-sendmail.sh [--force]
# Prints the tree's location on stdout (last line).
set -euo pipefail

ROOT="${SELLO_SENDMAIL_ROOT:-/opt/sello-test/sendmail}"
STAMP="$ROOT/.sello-sendmail-version"
FORCE=0
case "${1:-}" in
  --force) FORCE=1 ;;
  '') ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

say() { echo "setup-sendmail: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=test/interop/unpack-debian.sh
. "$(dirname "$0")/unpack-debian.sh"

[ "$(id -u)" -eq 0 ] || die "run as root (it creates $ROOT)"
case "$ROOT" in /*) ;; *) die "SELLO_SENDMAIL_ROOT must be an absolute path: $ROOT" ;; esac

# -d0.1 prints the version before sendmail looks for a config (and fails: there is none).
probe() {
  local output
  output="$("$ROOT/usr/libexec/sendmail/sendmail" -d0.1 -bt </dev/null 2>&1 || true)"
  grep -q '^Version ' <<<"$output"
}

candidate="$(apt-cache policy sendmail-bin 2>/dev/null | awk '/Candidate:/ { print $2 }')"
if [ "$candidate" = "(none)" ]; then candidate=""; fi
if [ "$FORCE" -eq 0 ] && [ -f "$STAMP" ] && probe; then
  installed="$(cat "$STAMP")"
  if [ -z "$candidate" ] || [ "$candidate" = "$installed" ]; then
    say "sendmail-bin $installed already in $ROOT"
    echo "$ROOT"
    exit 0
  fi
  say "refetching: $ROOT has $installed, apt's candidate is $candidate"
fi

work="$(mktemp -d)"
staging=""
trap 'rm -rf "$work" ${staging:+"$staging"}' EXIT
fetch_debs "$work" sendmail-bin sendmail-cf
bin_deb="$(ls "$work"/sendmail-bin_*.deb)"
version="$(dpkg-deb -f "$bin_deb" Version)"

# Shared libraries and m4 (sendmail-cf's dependency, which builds sendmail.cf).
install_missing_libraries sendmail "$bin_deb" m4

staging="$ROOT.new.$$"
unpack_debs "$staging" "$work"/*.deb
unresolved="$(ldd "$staging/usr/libexec/sendmail/sendmail" 2>/dev/null | grep 'not found' || true)"
[ -z "$unresolved" ] || die "unresolved shared libraries: $unresolved"

swap_in "$staging" "$ROOT" .sello-sendmail-version "$version"
probe || die "$ROOT/usr/libexec/sendmail/sendmail does not run"
say "sendmail-bin $version unpacked into $ROOT"
echo "$ROOT"
