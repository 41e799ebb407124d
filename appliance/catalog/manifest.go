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
//
// It also carries every ESP8266 image compressed for --gzip, in one blob
// embedded beside it (GzipBlob), so that --gzip costs no start-up time
// either: the deflate encoder spends about 0.3 s per MB, once, at build.
type Manifest struct {
	Files   map[string]ManifestFile `json:"files"`
	Skipped map[string]string       `json:"skipped,omitempty"`
	// Samples says the files are the repository's sample images (the
	// default build), which do not boot on a device: they are for a
	// developer's own machine, not a LAN.
	Samples bool `json:"samples,omitempty"`

	gzip []byte // the compressed images, at ManifestFile.Gzip's offsets
}

// ManifestFile is one file's build-time description.
type ManifestFile struct {
	Size   int64           `json:"size"`
	MD5    string          `json:"md5"`
	SHA256 string          `json:"sha256"`
	Image  *espimage.Image `json:"image,omitempty"`
	Gzip   *ManifestGzip   `json:"gzip,omitempty"`
}

// ManifestGzip locates an image's compressed form in the gzip blob.
type ManifestGzip struct {
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	MD5    string `json:"md5"`
	SHA256 string `json:"sha256"`
}

// NewManifest describes fsys by loading it once, the slow way, and
// compresses every image --gzip could serve (see GzipBlob).
func NewManifest(fsys fs.FS) (*Manifest, error) {
	c, err := Load(fsys, Options{Source: "manifest", Gzip: func(string) bool { return true }})
	if err != nil {
		return nil, err
	}
	m := &Manifest{Files: map[string]ManifestFile{}, Skipped: c.skipped}
	for _, e := range c.all { // sorted by path: the blob is reproducible
		f := ManifestFile{Size: e.Size, MD5: e.MD5, SHA256: e.SHA256, Image: e.Image}
		if v := e.Gzip; v != nil {
			f.Gzip = &ManifestGzip{Offset: int64(len(m.gzip)), Size: v.Size, MD5: v.MD5, SHA256: v.SHA256}
			m.gzip = append(m.gzip, v.content...)
		}
		m.Files[e.Path] = f
	}
	return m, nil
}

// GzipBlob is the compressed images NewManifest made, to be embedded
// beside the manifest and handed back to ParseManifest.
func (m *Manifest) GzipBlob() []byte { return m.gzip }

// variant returns f's compressed form from the blob, or nil when it has
// none or the blob does not hold it (a blob from another build).
func (m *Manifest) variant(f ManifestFile) *Variant {
	g := f.Gzip
	if g == nil || g.Offset < 0 || g.Size <= 0 || g.Offset+g.Size > int64(len(m.gzip)) {
		return nil
	}
	return &Variant{Size: g.Size, MD5: g.MD5, SHA256: g.SHA256, content: m.gzip[g.Offset : g.Offset+g.Size : g.Offset+g.Size]}
}

// MarshalIndent is the manifest's stable file form (sorted keys).
func (m *Manifest) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseManifest reads a manifest written by MarshalIndent, with the gzip
// blob written beside it (nil when there is none). The blob is used in
// place, not copied: pass the embedded bytes.
func ParseManifest(b, gzip []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m.gzip = gzip
	return &m, nil
}

// Verify re-reads every file that the catalog took from a manifest and
// reports the paths whose bytes no longer match it (a firmware folder
// changed without regenerating the manifest), or whose compressed form
// does not match its digest (a gzip blob not made with this manifest).
// It reads one file at a time.
func (c *Catalog) Verify(fsys fs.FS, m *Manifest) (stale []string) {
	paths := make([]string, 0, len(m.Files))
	for p := range m.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e, ok := c.files[p]
		if !ok {
			continue
		}
		b, err := fs.ReadFile(fsys, p)
		gz := e.Gzip != nil && e.Gzip.content != nil && md5hex(e.Gzip.content) != e.Gzip.MD5 // the blob of another build
		if err != nil || md5hex(b) != m.Files[p].MD5 || gz {
			stale = append(stale, p)
		}
	}
	return stale
}

// Equal reports whether two manifests describe the same files and carry
// the same compressed images.
func (m *Manifest) Equal(o *Manifest) bool {
	a, _ := m.MarshalIndent()
	b, _ := o.MarshalIndent()
	return bytes.Equal(a, b) && bytes.Equal(m.gzip, o.gzip)
}
