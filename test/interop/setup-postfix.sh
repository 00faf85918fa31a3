#!/usr/bin/env bash
# Provides a real Postfix for the interop tests on a machine that also has Debian's exim4: the
# two packages conflict (both provide mail-transport-agent), so Postfix is never installed. This
# script downloads Debian's postfix .deb and unpacks it (dpkg-deb -x) into a private tree that
# test/helpers/postfix.ts runs with a private config, queue and maillog per test file.
# Owns: that tree (default /opt/sello-test/postfix, or $SELLO_POSTFIX_ROOT), the 'postfix' system
# user and 'postdrop' group, and installing missing *shared libraries* postfix links against.
# Must not: install or configure the postfix package, touch /etc/postfix or /usr/lib/postfix,
# start any daemon, or change exim4. Idempotent; rerun after `apt-get update` to pick up a newer
# postfix (it refetches when the candidate version changed). Needs root. Usage:
#   test/interop/setup-postfix.sh [--force]
# Prints the tree's location on stdout (last line).
set -euo pipefail

ROOT="${SELLO_POSTFIX_ROOT:-/opt/sello-test/postfix}"
STAMP="$ROOT/.sello-postfix-version"
FORCE=0
case "${1:-}" in
  --force) FORCE=1 ;;
  '') ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

say() { echo "setup-postfix: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=test/interop/unpack-debian.sh
. "$(dirname "$0")/unpack-debian.sh"

[ "$(id -u)" -eq 0 ] || die "run as root (it creates $ROOT and the postfix user)"
case "$ROOT" in /*) ;; *) die "SELLO_POSTFIX_ROOT must be an absolute path: $ROOT" ;; esac

# The library directory the binaries need (their RUNPATH says /usr/lib/postfix, which we do not
# create): the harness passes it as LD_LIBRARY_PATH, and so does this script when probing.
probe_version() {
  LD_LIBRARY_PATH="$ROOT/usr/lib/postfix" "$ROOT/usr/sbin/postconf" -c "$ROOT/usr/share/postfix" -d -h mail_version 2>/dev/null
}

# ---------- accounts: Postfix's daemons run as mail_owner=postfix; setgid_group=postdrop ----------
if ! getent group postfix >/dev/null; then groupadd --system postfix; say "created group postfix"; fi
if ! getent passwd postfix >/dev/null; then
  useradd --system --gid postfix --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postfix
  say "created user postfix"
fi
if ! getent group postdrop >/dev/null; then groupadd --system postdrop; say "created group postdrop"; fi

# ---------- up to date already? ----------
candidate="$(apt-cache policy postfix 2>/dev/null | awk '/Candidate:/ { print $2 }')"
if [ "$candidate" = "(none)" ]; then candidate=""; fi
if [ "$FORCE" -eq 0 ] && [ -f "$STAMP" ] && probe_version >/dev/null; then
  installed="$(cat "$STAMP")"
  if [ -z "$candidate" ] || [ "$candidate" = "$installed" ]; then
    say "postfix $installed (Postfix $(probe_version)) already in $ROOT"
    echo "$ROOT"
    exit 0
  fi
  say "refetching: $ROOT has $installed, apt's candidate is $candidate"
fi

# ---------- fetch ----------
work="$(mktemp -d)"
staging=""
trap 'rm -rf "$work" ${staging:+"$staging"}' EXIT
fetch_debs "$work" postfix
deb="$(ls "$work"/postfix_*.deb)"
version="$(dpkg-deb -f "$deb" Version)"

# ---------- shared libraries: install what is missing ----------
install_missing_libraries postfix "$deb"

# ---------- unpack into a fresh tree, then swap it in ----------
staging="$ROOT.new.$$"
# postdrop and postqueue lose their setgid bit: the tests submit over SMTP only.
unpack_debs "$staging" "$deb"

unresolved="$(
  for binary in "$staging"/usr/sbin/* "$staging"/usr/lib/postfix/sbin/* "$staging"/usr/lib/postfix/*.so; do
    if [ "$(head -c4 "$binary" | tail -c3)" = "ELF" ]; then
      LD_LIBRARY_PATH="$staging/usr/lib/postfix" ldd "$binary" 2>/dev/null | grep 'not found' | sed "s|^|$(basename "$binary"): |" || true
    fi
  done
)"
[ -z "$unresolved" ] || die "unresolved shared libraries (LD_LIBRARY_PATH=$ROOT/usr/lib/postfix):"$'\n'"$unresolved"

swap_in "$staging" "$ROOT" .sello-postfix-version "$version"

mail_version="$(probe_version)" || die "$ROOT/usr/sbin/postconf does not run"
say "postfix $version (Postfix $mail_version) unpacked into $ROOT"
echo "$ROOT"
