package main

import (
	"bytes"
	"os"
	"testing"
)

// TestManifestUpToDate: the committed manifest describes firmware/ as it
// is, so a plain `go build` embeds a true one.
func TestManifestUpToDate(t *testing.T) {
	want, err := manifest("../../firmware")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../firmware.manifest.json")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("firmware.manifest.json is stale (run make build or go generate): %v", err)
	}
}
