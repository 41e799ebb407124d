package main

import (
	"bytes"
	"os"
	"testing"
)

// TestManifestUpToDate: the committed manifest and gzip blob describe
// firmware/ as it is, so a plain `go build` embeds true ones.
func TestManifestUpToDate(t *testing.T) {
	desc, gzip, err := manifest("../../firmware", true, false) // the repository's samples
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"firmware.manifest.json": desc, "firmware.gzip": gzip} {
		got, err := os.ReadFile("../../" + name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is stale (run make build or go generate): %v", name, err)
		}
	}
}
