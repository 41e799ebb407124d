# otabox — see README.md. `make run` serves the embedded firmware;
# `make test` runs every test.

VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD_TIME ?= $(shell date -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s) +%Y-%m-%dT%H:%M:%SZ)
# FIRMWARE=dir bakes that folder in instead of firmware/.
FIRMWARE   ?=
LDFLAGS    := -s -w -X main.version=$(VERSION) -X main.buildTime=$(BUILD_TIME)
GO         ?= go
export CGO_ENABLED = 0

.PHONY: build manifest run test fmt vet fuzz samples release clean

# The build-time description of firmware/ that lets start-up skip hashing.
manifest:
	$(GO) run ./tools/mkmanifest -in firmware -out firmware.manifest.json

build:
ifneq ($(FIRMWARE),)
	@test -d "$(FIRMWARE)" || { echo "FIRMWARE=$(FIRMWARE) is not a folder"; exit 1; }
	@# go:embed only reads inside the module: build a copy whose firmware/ is $(FIRMWARE).
	rm -rf .bake && mkdir .bake && tar --exclude=./.bake --exclude=./.git --exclude=./firmware -cf - . | tar -xf - -C .bake
	cp -r "$(FIRMWARE)" .bake/firmware
	cd .bake && $(GO) run ./tools/mkmanifest -in firmware -out firmware.manifest.json
	cd .bake && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o ../otabox .
	rm -rf .bake
else
	$(GO) run ./tools/mkmanifest -in firmware -out firmware.manifest.json
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o otabox .
endif

run: build
	./otabox serve $(ARGS)

# Every test with the race detector (it needs cgo), fuzz seed corpora
# included, after vet and a gofmt check.
test: vet
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w .

# Explore each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	@$(GO) list -f '{{.ImportPath}}' ./... | while read pkg; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s || exit 1; \
	  done; done

# Regenerate the sample images in firmware/ (deterministic).
samples:
	$(GO) generate ./...

# Cross-compiled, reproducible release archives: binary, README, LICENSE and
# the systemd unit for each Pi generation, plus SHA256SUMS. Two runs on one
# commit give identical bytes (fixed mtimes and owners, gzip -n, no build id).
DIST      ?= dist
PLATFORMS := amd64:amd64: arm64:arm64: armv7:arm:7 armv6:arm:6
EPOCH     := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
release:
	rm -rf "$(DIST)" && mkdir -p "$(DIST)"
	$(GO) run ./tools/mkmanifest -in firmware -out firmware.manifest.json
	set -e; for p in $(PLATFORMS); do \
	  name=$${p%%:*}; rest=$${p#*:}; arch=$${rest%%:*}; arm=$${rest#*:}; \
	  base=otabox_$(VERSION)_linux_$$name; dir="$(DIST)/$$base"; mkdir -p "$$dir"; \
	  GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -buildvcs=false \
	    -ldflags '$(LDFLAGS) -buildid=' -o "$$dir/otabox" .; \
	  cp README.md LICENSE contrib/otabox.service "$$dir/"; \
	  chmod 0755 "$$dir/otabox"; chmod 0644 "$$dir/README.md" "$$dir/LICENSE" "$$dir/otabox.service"; \
	  tar --sort=name --mtime=@$(EPOCH) --owner=0 --group=0 --numeric-owner --mode=u+rwX,go+rX,go-w \
	    -C "$(DIST)" -cf - "$$base" | gzip -9n > "$$dir.tar.gz"; \
	  rm -rf "$$dir"; \
	done
	cd "$(DIST)" && sha256sum *.tar.gz > SHA256SUMS && cat SHA256SUMS

clean:
	rm -rf otabox dist .bake
