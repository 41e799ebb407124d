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
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"otabox/appliance/catalog"
	"otabox/appliance/fsimage"
)

func main() {
	in := flag.String("in", "firmware", "firmware folder")
	out := flag.String("out", "firmware.manifest.json", "manifest to write")
	gz := flag.String("gzip", "firmware.gzip", "compressed images to write")
	samples := flag.Bool("samples", false, "the folder is the repository's sample images (they do not boot)")
	prune := flag.Bool("prune", false, "delete from the folder (a bake's copy) every file the build leaves out and every file that is no firmware or filesystem image, so that go:embed carries only what is served")
	flag.Parse()
	b, blob, err := manifest(*in, *samples, *prune)
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

func manifest(dir string, samples, prune bool) (desc, gzip []byte, err error) {
	m, err := catalog.NewManifest(os.DirFS(dir))
	if err != nil {
		return nil, nil, err
	}
	m.Samples = samples
	if prune {
		if err := pruneFolder(dir, m); err != nil {
			return nil, nil, err
		}
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
	desc, err = m.MarshalIndent()
	return desc, m.GzipBlob(), err
}

// pruneFolder deletes from dir what the build would embed but never
// serve as firmware: files left out (their reason is printed with the
// rest) and files that are neither a firmware image nor a filesystem
// image (a notes.txt beside the images), each named.
func pruneFolder(dir string, m *catalog.Manifest) error {
	for p := range m.Skipped {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			return fmt.Errorf("prune %s: %w", p, err)
		}
	}
	var plain []string
	for p, f := range m.Files {
		if f.Image != nil {
			continue
		}
		head := make([]byte, fsimage.HeadLen)
		fh, err := os.Open(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			return err
		}
		n, _ := io.ReadFull(fh, head)
		fh.Close()
		if fsimage.Recognise(path.Base(p), head[:n], f.Size) == nil {
			plain = append(plain, p)
		}
	}
	sort.Strings(plain)
	for _, p := range plain {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			return fmt.Errorf("prune %s: %w", p, err)
		}
		delete(m.Files, p)
		fmt.Fprintf(os.Stderr, "mkmanifest: left out %s: not a firmware image nor a filesystem image (not embedded)\n", p)
	}
	return nil
}
