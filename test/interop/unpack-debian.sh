# Sourced by setup-postfix.sh and setup-sendmail.sh: the steps both take to run a Debian MTA
# that conflicts with exim4 without installing it — fetch its .debs, install the shared libraries
# it links against (libraries never conflict with exim4), unpack into a staging tree, and swap
# that tree in. Owns: those steps. Must not: decide which packages or which tree (the callers do),
# or run anything it unpacked. Needs `say` and `die` from the caller.

# fetch_debs DIR PACKAGE…: apt-get download into DIR; on failure, apt-get update once and retry.
fetch_debs() {
  local dir="$1"
  shift
  # apt drops to _apt for downloads; let it write here (otherwise it warns and downloads as root).
  if getent passwd _apt >/dev/null; then chown _apt "$dir"; fi
  if ! (cd "$dir" && apt-get download -q "$@" >&2); then
    say "apt-get download failed; running apt-get update once"
    apt-get update -qq >&2
    (cd "$dir" && apt-get download -q "$@" >&2) || die "apt-get download $* failed"
  fi
}

# install_missing_libraries WHAT DEB [PACKAGE…]: the lib* packages DEB depends on, and the extra
# PACKAGEs, that are not installed yet.
install_missing_libraries() {
  local what="$1" deb="$2" package
  shift 2
  local missing=()
  for package in "$@" $(dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | sed -E 's/\(.*\)//; s/[[:space:]]//g' | grep -E '^lib' | sort -u); do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then missing+=("$package"); fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing what $what needs: ${missing[*]}"
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# unpack_debs STAGING DEB…: a fresh tree with every DEB unpacked, owned by root, and no setuid or
# setgid program outside the package manager's knowledge (the tests submit over SMTP only).
unpack_debs() {
  local staging="$1" deb
  shift
  mkdir -p "$(dirname "$staging")"
  rm -rf "$staging"
  for deb in "$@"; do dpkg-deb -x "$deb" "$staging"; done
  find "$staging" -type f -perm /6000 -exec chmod ug-s {} +
  chown -R root:root "$staging"
}

# swap_in STAGING ROOT STAMP VERSION: records VERSION in the staging tree's STAMP file (a name
# relative to the tree), then replaces ROOT with it.
swap_in() {
  local staging="$1" root="$2" stamp="$3" version="$4"
  echo "$version" >"$staging/$stamp"
  rm -rf "$root.old"
  if [ -e "$root" ]; then mv "$root" "$root.old"; fi
  mv "$staging" "$root"
  rm -rf "$root.old"
}
