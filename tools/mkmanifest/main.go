// Command mkmanifest describes a firmware folder at build time (sizes,
// digests, parsed images) so that otabox starts without reading the
// firmware it embeds. The Makefile runs it before every build.
//
//	go run ./tools/mkmanifest -in firmware -out firmware.manifest.json
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
	flag.Parse()
	b, err := manifest(*in)
	if err == nil {
		if old, _ := os.ReadFile(*out); !bytes.Equal(old, b) { // leave the mtime alone when nothing changed
			err = os.WriteFile(*out, b, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkmanifest:", err)
		os.Exit(1)
	}
}

func manifest(dir string) ([]byte, error) {
	m, err := catalog.NewManifest(os.DirFS(dir))
	if err != nil {
		return nil, err
	}
	// Every file the build leaves out, with the reason serve would give.
	var skipped []string
	for p := range m.Skipped {
		skipped = append(skipped, p)
	}
	sort.Strings(skipped)
	for _, p := range skipped {
		fmt.Fprintf(os.Stderr, "mkmanifest: left out %s: %s\n", p, m.Skipped[p])
	}
	return m.MarshalIndent()
}
