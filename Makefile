# otabox — see README.md. `make run` serves the embedded firmware;
# `make test` runs every test.

VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD_TIME ?= $(shell date -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s) +%Y-%m-%dT%H:%M:%SZ)
# FIRMWARE=dir bakes that folder in instead of firmware/.
FIRMWARE   ?=
LDFLAGS    := -s -w -X main.version=$(VERSION) -X main.buildTime=$(BUILD_TIME)
GO         ?= go
SHELL      := /bin/bash
export CGO_ENABLED = 0

.PHONY: build manifest run test fmt vet fuzz samples release clean esptooljs

# The build-time description of firmware/ that lets start-up skip hashing.
manifest:
	$(GO) run ./tools/mkmanifest -samples -in firmware -out firmware.manifest.json -gzip firmware.gzip

build:
ifneq ($(FIRMWARE),)
	tools/bake.sh "$(FIRMWARE)" $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o "$(CURDIR)/otabox" .
else
	$(GO) run ./tools/mkmanifest -samples -in firmware -out firmware.manifest.json -gzip firmware.gzip
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o otabox .
endif

# The samples do not boot: make run keeps them on this machine (loopback,
# no mDNS) unless ARGS says otherwise.
ARGS ?= -b 127.0.0.1 --mdns=false
run: build
	./otabox serve $(ARGS)

# Every test with the race detector (it needs cgo and gcc), fuzz seed
# corpora included, after vet and a gofmt check. tools/testsummary names
# every skipped test with its reason and ends with "N passed, N failed,
# N skipped"; under CI=true the browser, qemu, mDNS and disk-full tests
# fail instead of skipping. -timeout is a guard against a hang, not the
# budget: the root package takes about 8 minutes here (three release
# builds, a minute and a half each), close to go test's default of 10 on
# a slower runner.
test: vet esptooljs
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	set -o pipefail; CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m -json ./... | $(GO) run ./tools/testsummary

vet:
	$(GO) vet ./...

# Espressif's esptool-js (npm, Apache-2.0, pinned in its package-lock),
# the host no one here wrote that checks the ROM emulator
# (TestEsptoolJSDrivesTheEmulator). Without npm the test says it skipped.
ESPTOOLJS := appliance/romloader/romemu/testdata/esptooljs
esptooljs:
	@if command -v npm >/dev/null; then \
	  [ -f $(ESPTOOLJS)/node_modules/esptool-js/package.json ] || (cd $(ESPTOOLJS) && npm ci --no-audit --no-fund --loglevel=error); \
	else echo "npm not found: TestEsptoolJSDrivesTheEmulator will skip (apt-get install -y nodejs npm)"; fi

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

# Cross-compiled, reproducible release archives for each Pi generation,
# plus SHA256SUMS (tools/release.sh). A release carries no firmware unless
# FIRMWARE=dir is given: the samples in firmware/ do not boot, and the
# service then serves /var/lib/otabox/firmware.
DIST      ?= dist
EPOCH     := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
release:
	rm -rf "$(DIST)" && mkdir -p "$(DIST)"
	DIST="$(abspath $(DIST))" VERSION="$(VERSION)" LDFLAGS="$(LDFLAGS)" EPOCH="$(EPOCH)" GO="$(GO)" \
	  tools/bake.sh "$(FIRMWARE)" sh tools/release.sh

clean:
	rm -rf otabox dist
