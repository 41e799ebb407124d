package main

import "embed"

// firmware is the catalog otabox serves when no --catalog is given: the
// firmware/ folder as it was at build time. Replace its contents (or build
// with `make build FIRMWARE=dir`) to bake in your own images.
//
//go:generate go run ./tools/mksamples -out firmware
//go:embed all:firmware
var firmware embed.FS

// manifest describes firmware/ as the build saw it (tools/mkmanifest), so
// that start-up hashes nothing; firmwareGzip holds its ESP8266 images
// compressed for --gzip, so that start-up compresses nothing either.
//
//go:generate go run ./tools/mkmanifest -samples -in firmware -out firmware.manifest.json -gzip firmware.gzip
//go:embed firmware.manifest.json
var manifest []byte

//go:embed firmware.gzip
var firmwareGzip []byte
