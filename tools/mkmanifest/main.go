// Command mkmanifest describes a firmware folder at build time (sizes,
// digests, parsed images) so that otabox starts without reading the
// firmware it embeds, and compresses its ESP8266 images for --gzip into a
// blob embedded beside the manifest, so that it starts without
// compressing them either. The Makefile runs it before every build.
//
//	go run ./tools/mkmanifest -in firmware -out firmware.manifest.json -gzip firmware.gzip
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sort"

	"otabox/appliance/catalog"
)

func main() {
	in := flag.String("in", "firmware", "firmware folder")
	out := flag.String("out", "firmware.manifest.json", "manifest to write")
	gz := flag.String("gzip", "firmware.gzip", "compressed images to write")
	samples := flag.Bool("samples", false, "the folder is the repository's sample images (they do not boot)")
	flag.Parse()
	b, blob, err := manifest(*in, *samples)
	if err == nil {
		err = writeIfChanged(*out, b)
	}
	if err == nil {
		err = writeIfChanged(*gz, blob)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkmanifest:", err)
		os.Exit(1)
	}
}

// writeIfChanged leaves the file (and its mtime) alone when nothing changed.
func writeIfChanged(name string, b []byte) error {
	if old, err := os.ReadFile(name); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return os.WriteFile(name, b, 0o644)
}

func manifest(dir string, samples bool) (desc, gzip []byte, err error) {
	m, err := catalog.NewManifest(os.DirFS(dir))
	if err != nil {
		return nil, nil, err
	}
	m.Samples = samples
	// Every file the build leaves out, with the reason serve would give.
	var skipped []string
	for p := range m.Skipped {
		skipped = append(skipped, p)
	}
	sort.Strings(skipped)
	for _, p := range skipped {
		fmt.Fprintf(os.Stderr, "mkmanifest: left out %s: %s\n", p, m.Skipped[p])
	}
	desc, err = m.MarshalIndent()
	return desc, m.GzipBlob(), err
}
