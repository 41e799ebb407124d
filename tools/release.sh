#!/bin/sh
# release.sh: cross-compiles otabox for each Pi generation into $DIST as
# reproducible archives (fixed mtimes and owners, gzip -n, no build id):
# binary, README, LICENSE and the systemd unit, and a .deb of each (nfpm,
# contrib/deb), plus SHA256SUMS. Run by `make release` inside a bake
# (tools/bake.sh), so firmware/ is what the release carries.
set -eu
: "${DIST:?}" "${VERSION:?}" "${LDFLAGS:?}" "${EPOCH:?}"
# A Debian version starts with a digit: "test" or a commit becomes 0~test.
case $VERSION in [0-9]*) debver=$VERSION ;; *) debver=0~$VERSION ;; esac
for p in amd64:amd64::amd64 arm64:arm64::arm64 armv7:arm:7:armhf armv6:arm:6:armel; do
	name=${p%%:*}; rest=${p#*:}; arch=${rest%%:*}; rest=${rest#*:}; arm=${rest%%:*}; debarch=${rest#*:}
	base=otabox_${VERSION}_linux_$name
	dir=$DIST/$base
	mkdir -p "$dir"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOARM=$arm ${GO:-go} build -trimpath -buildvcs=false \
		-ldflags "$LDFLAGS -buildid=" -o "$dir/otabox" .
	cp README.md LICENSE contrib/otabox.service "$dir/"
	chmod 0755 "$dir/otabox"
	chmod 0644 "$dir/README.md" "$dir/LICENSE" "$dir/otabox.service"
	tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --mode=u+rwX,go+rX,go-w \
		-C "$DIST" -cf - "$base" | gzip -9n > "$dir.tar.gz"
	mkdir -p .deb && cp "$dir/otabox" .deb/otabox
	DEB_ARCH=$debarch DEB_VERSION=$debver SOURCE_DATE_EPOCH=$EPOCH \
		${GO:-go} tool nfpm pkg --config contrib/deb/nfpm.yaml --packager deb \
		--target "$DIST/otabox_${VERSION}_$debarch.deb" >/dev/null
	rm -rf "$dir"
done
cd "$DIST" && sha256sum ./*.tar.gz ./*.deb | sed 's# \./# #' > SHA256SUMS && cat SHA256SUMS
