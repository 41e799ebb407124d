#!/bin/sh
# bake.sh DIR CMD...: runs CMD in a temporary copy of the source tree whose
# firmware/ holds DIR's files ("" for none: an empty catalog), with the
# build manifest regenerated. go:embed reads only inside the module, so the
# copy is how another folder gets baked in. The copy is removed however CMD
# ends; nothing is left in the tree.
set -eu
fw=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$fw" ]; then
	[ -d "$fw" ] || { echo "bake: FIRMWARE=$fw is not a folder" >&2; exit 1; }
	fw=$(cd "$fw" && pwd)
fi
bake=$(mktemp -d "${TMPDIR:-/tmp}/otabox-bake.XXXXXX")
trap 'rm -rf "$bake"' EXIT INT TERM
(cd "$root" && tar --exclude=./.git --exclude=./firmware --exclude=./dist --exclude=./otabox -cf - .) | tar -xf - -C "$bake"
mkdir "$bake/firmware"
touch "$bake/firmware/.keep" # go:embed needs a file; the catalog skips dotfiles
if [ -n "$fw" ]; then
	cp -R "$fw"/. "$bake/firmware/"
fi
cd "$bake"
# -prune: what the build leaves out (named, with the reason) is not embedded.
${GO:-go} run ./tools/mkmanifest -prune -in firmware -out firmware.manifest.json -gzip firmware.gzip
"$@"
