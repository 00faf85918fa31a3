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
# apt drops to _apt for downloads; let it write here (otherwise it warns and downloads as root).
if getent passwd _apt >/dev/null; then chown _apt "$work"; fi
if ! (cd "$work" && apt-get download -q postfix >&2); then
  say "apt-get download failed; running apt-get update once"
  apt-get update -qq >&2
  (cd "$work" && apt-get download -q postfix >&2) || die "apt-get download postfix failed"
fi
deb="$(ls "$work"/postfix_*.deb)"
version="$(dpkg-deb -f "$deb" Version)"

# ---------- shared libraries: install what is missing (libraries never conflict with exim4) ----------
missing=()
for package in $(dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | sed -E 's/\(.*\)//; s/[[:space:]]//g' | grep -E '^lib' | sort -u); do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then missing+=("$package"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing libraries postfix needs: ${missing[*]}"
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# ---------- unpack into a fresh tree, then swap it in ----------
mkdir -p "$(dirname "$ROOT")"
staging="$ROOT.new.$$"
rm -rf "$staging"
dpkg-deb -x "$deb" "$staging"
# No setuid/setgid programs outside the package manager's knowledge (postdrop, postqueue): the
# tests submit over SMTP only.
find "$staging" -type f -perm /6000 -exec chmod ug-s {} +
chown -R root:root "$staging"

unresolved="$(
  for binary in "$staging"/usr/sbin/* "$staging"/usr/lib/postfix/sbin/* "$staging"/usr/lib/postfix/*.so; do
    if [ "$(head -c4 "$binary" | tail -c3)" = "ELF" ]; then
      LD_LIBRARY_PATH="$staging/usr/lib/postfix" ldd "$binary" 2>/dev/null | grep 'not found' | sed "s|^|$(basename "$binary"): |" || true
    fi
  done
)"
[ -z "$unresolved" ] || die "unresolved shared libraries (LD_LIBRARY_PATH=$ROOT/usr/lib/postfix):"$'\n'"$unresolved"

echo "$version" >"$staging/.sello-postfix-version"
rm -rf "$ROOT.old"
if [ -e "$ROOT" ]; then mv "$ROOT" "$ROOT.old"; fi
mv "$staging" "$ROOT"
rm -rf "$ROOT.old"

mail_version="$(probe_version)" || die "$ROOT/usr/sbin/postconf does not run"
say "postfix $version (Postfix $mail_version) unpacked into $ROOT"
echo "$ROOT"
