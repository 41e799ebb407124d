package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"

	"otabox/appliance/espimage"
)

// Manifest describes a firmware folder as it was at build time: every
// file's size, digests and parsed image, and why any file was left out.
// otabox embeds one beside the firmware so that start-up does no work
// that grows with the firmware: 200 MB baked in start as fast as 2 MB.
type Manifest struct {
	Files   map[string]ManifestFile `json:"files"`
	Skipped map[string]string       `json:"skipped,omitempty"`
}

// ManifestFile is one file's build-time description.
type ManifestFile struct {
	Size   int64           `json:"size"`
	MD5    string          `json:"md5"`
	SHA256 string          `json:"sha256"`
	Image  *espimage.Image `json:"image,omitempty"`
}

// NewManifest describes fsys by loading it once, the slow way.
func NewManifest(fsys fs.FS) (*Manifest, error) {
	c, err := Load(fsys, Options{Source: "manifest"})
	if err != nil {
		return nil, err
	}
	m := &Manifest{Files: map[string]ManifestFile{}, Skipped: c.skipped}
	for _, e := range c.all {
		m.Files[e.Path] = ManifestFile{Size: e.Size, MD5: e.MD5, SHA256: e.SHA256, Image: e.Image}
	}
	return m, nil
}

// MarshalIndent is the manifest's stable file form (sorted keys).
func (m *Manifest) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseManifest reads a manifest written by MarshalIndent.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// Verify re-reads every file that the catalog took from a manifest and
// reports the paths whose bytes no longer match it (a firmware folder
// changed without regenerating the manifest). It reads one file at a time.
func (c *Catalog) Verify(fsys fs.FS, m *Manifest) (stale []string) {
	paths := make([]string, 0, len(m.Files))
	for p := range m.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if _, ok := c.files[p]; !ok {
			continue
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil || md5hex(b) != m.Files[p].MD5 {
			stale = append(stale, p)
		}
	}
	return stale
}

// Equal reports whether two manifests describe the same files.
func (m *Manifest) Equal(o *Manifest) bool {
	a, _ := m.MarshalIndent()
	b, _ := o.MarshalIndent()
	return bytes.Equal(a, b)
}
