#!/usr/bin/env bash
# build.sh builds dist/lodis_<version>_<arch>.deb from this source tree,
# reproducibly: the same commit gives a byte-identical package.
#
#   packaging/deb/build.sh            (or: make deb)
#
# Environment (all optional):
#   VERSION          lodis version as `make` computes it (git describe); turned
#                    into a Debian version: v1.2.3 -> 1.2.3, v1.2.3-4-gabc ->
#                    1.2.3+4.gabc, a commit without a tag (abc, abc-dirty) ->
#                    0~git<date>.<time>.abc(.dirty), from the commit time
#   SOURCE_DATE_EPOCH  timestamp of every file and of the package (default:
#                    the commit time of HEAD)
#   GOARCH           target architecture (default: the Go toolchain's)
#   DEB_MAINTAINER   Maintainer field
#   OUT              output directory (default: dist)
#
# The binary and the files from units/ are installed by `make install
# DESTDIR=<staging> PREFIX=/usr`, the one install recipe; this script adds
# only what a Debian package needs on top: maintainer scripts, docs, control.
set -euo pipefail
export LC_ALL=C TZ=UTC
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

die() { echo "packaging/deb/build.sh: $*" >&2; exit 1; }
for tool in dpkg-deb gzip md5sum make; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install -y dpkg gzip coreutils make)"
done

GO=${GO:-go}
OUT=${OUT:-dist}
DEB_MAINTAINER=${DEB_MAINTAINER:-"lodis maintainers <lodis@users.noreply.github.com>"}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || true)}
[ -n "$VERSION" ] || die "no VERSION: run inside the git checkout or set VERSION=1.2.3"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) ||
    die "no SOURCE_DATE_EPOCH: run inside the git checkout or set it"
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since the epoch, got '$SOURCE_DATE_EPOCH'"
export SOURCE_DATE_EPOCH

# debian_version maps a git-describe version onto Debian's ordering.
debian_version() {
  local v=$1
  if [[ $v =~ ^[0-9a-f]{7,40}(-dirty)?$ ]]; then
    v="0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d.%H%M%S).${v//-/.}"
  else
    v=${v#v}
    v=${v/-/+}
    v=${v//-/.}
  fi
  [[ $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "VERSION '$1' gives '$v', not a Debian version: use digits, letters and . + ~"
  printf '%s' "$v"
}
version=$(debian_version "$VERSION")

goarch=${GOARCH:-$(GOOS=linux "$GO" env GOARCH)}
case $goarch in
  amd64 | arm64 | riscv64 | s390x | mips64le) arch=$goarch ;;
  386) arch=i386 ;;
  arm) arch=armhf ;;
  ppc64le) arch=ppc64el ;;
  *) die "no Debian architecture for GOARCH=$goarch" ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
doc=$root/usr/share/doc/lodis

# The binary: static (no libc dependency; a dropped-in release runs on any
# host), stamped with the package version so `lodis version` and dpkg agree,
# built fresh into the staging area (bin/lodis is left alone).
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch \
  make -s install BIN="$stage/lodis" DESTDIR="$root" PREFIX=/usr GO="$GO" VERSION="$version" >/dev/null
[ -x "$root/usr/bin/lodis" ] || die "make install left no usr/bin/lodis"

# The polkit rule of the supervisor, when the tree has one: the supervisor
# manages units through it, so polkitd becomes a dependency.
depends=systemd
shopt -s nullglob
rules=(packaging/polkit/*.rules)
if [ ${#rules[@]} -gt 0 ]; then
  install -d "$root/usr/share/polkit-1/rules.d"
  install -m 0644 "${rules[@]}" "$root/usr/share/polkit-1/rules.d/"
  depends="$depends, polkitd"
fi
shopt -u nullglob

# Units enabled (and started) when the package is installed, if the tree has
# them; ports are the operator's choice.
enable=()
for u in lodis-supervisor.service lodis-upgrade.path; do
  [ -f "units/$u" ] && enable+=("$u")
done

install -d "$doc" "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides" "$root/DEBIAN"

# license_of prints a license for the copyright file: a reference to Debian's
# copy of the Apache License 2.0 (with the module's NOTICE), else the full text.
license_of() {
  local dir=$1 f
  f=$(find "$dir" -maxdepth 1 -iname 'LICENSE*' -o -maxdepth 1 -iname 'COPYING*' | sort | head -n1)
  [ -n "$f" ] || die "no license file in $dir"
  if grep -q 'Apache License' "$f" && grep -q 'Version 2.0' "$f"; then
    echo " Apache License 2.0: see /usr/share/common-licenses/Apache-2.0."
    [ -f "$dir/NOTICE" ] && sed -e 's/^$/./' -e 's/^/ /' "$dir/NOTICE"
  else
    sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$f"
  fi
  return 0
}
{
  cat "$here/copyright"
  printf '\nThe Go standard library (Go %s):\n' "$("$GO" env GOVERSION)"
  license_of "$("$GO" env GOROOT)"
  while read -r mod ver; do
    dir=$("$GO" list -m -f '{{.Dir}}' "$mod@$ver") && [ -n "$dir" ] || die "module $mod@$ver is not in the module cache"
    printf '\n%s %s:\n' "$mod" "$ver"
    license_of "$dir"
  done < <("$GO" version -m "$root/usr/bin/lodis" | awk '$1 == "dep" { print $2, $3 }')
} >"$doc/copyright"
install -m 0644 "$here/README.Debian" "$doc/README.Debian"
# /etc/lodis/app.conf, every key commented out (the defaults): a conffile, so
# dpkg keeps the operator's edits across upgrades.
install -d "$root/etc/lodis"
install -m 0644 "$here/app.conf" "$root/etc/lodis/app.conf"
install -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/lodis"

# changelog.gz: one entry for this build, listing the commits since the last tag.
{
  printf 'lodis (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * Built from commit %s.\n' "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  if tag=$(git describe --tags --abbrev=0 2>/dev/null); then range="$tag..HEAD"; else range=HEAD; fi
  # Each subject wrapped at spaces (continuation lines indented), never cut
  # inside a word.
  { git log --no-merges --format='%s' -n 50 "$range" 2>/dev/null || true; } |
    while IFS= read -r subject; do
      printf '%s\n' "$subject" | fold -s -w 72 | sed 's/ *$//; 1s/^/  * /; 2,$s/^/    /'
    done
  printf '\n -- %s  %s\n' "$DEB_MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

# lodis(1), with the command list taken from the binary being packaged.
# The staged binary runs here unless it was cross-built; then build one for this host.
help=$("$root/usr/bin/lodis" help 2>/dev/null) ||
  help=$(CGO_ENABLED=0 GOOS=linux GOARCH="$("$GO" env GOHOSTARCH)" "$GO" run ./cmd/lodis help)
commands=$(printf '%s\n' "$help" | sed -n 's/-/\\-/g; s/^  \([a-z\\-]*\) \+\(.*\)$/.TP\n.B \1\n\2/p')
[ -n "$commands" ] || die "could not read the command list from 'lodis help'"
CMDS=$commands VER=$version DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d) \
  awk '{ gsub(/@VERSION@/, ENVIRON["VER"]); gsub(/@DATE@/, ENVIRON["DATE"]) }
       /^@COMMANDS@$/ { print ENVIRON["CMDS"]; next } { print }' \
  "$here/lodis.1.in" | gzip -9n >"$root/usr/share/man/man1/lodis.1.gz"

# Maintainer scripts: @ENABLE_UNITS@ is the list above.
for s in postinst prerm postrm; do
  sed "s|@ENABLE_UNITS@|${enable[*]}|g" "$here/$s" >"$root/DEBIAN/$s"
  chmod 0755 "$root/DEBIAN/$s"
done

# Normalise what the staging tree got from the local umask and clock.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f ! -path "$root/DEBIAN/*" ! -path "$root/usr/bin/*" -exec chmod 0644 {} +

# Installed-Size the way dpkg counts it: KiB per file, rounded up, 1 per other entry.
size=$(find "$root" ! -path "$root/DEBIAN*" ! -path "$root" -printf '%y %s\n' |
  awk '$1 == "f" { s += int(($2 + 1023) / 1024); next } { s += 1 } END { print s }')

sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$DEB_MAINTAINER|" \
  -e "s|@INSTALLED_SIZE@|$size|" -e "s|@DEPENDS@|$depends|" "$here/control.in" >"$root/DEBIAN/control"
(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
echo /etc/lodis/app.conf >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
deb="$OUT/lodis_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
