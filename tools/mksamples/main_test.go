package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestSamplesUpToDate: firmware/ holds exactly what the generator makes,
// so `make samples` on a clean checkout changes nothing.
func TestSamplesUpToDate(t *testing.T) {
	dir := t.TempDir()
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		got, _ := os.ReadFile(filepath.Join(dir, s.path))
		want, err := os.ReadFile(filepath.Join("..", "..", "firmware", s.path))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("firmware/%s is not what the generator makes (run make samples): %v", s.path, err)
		}
	}
}
