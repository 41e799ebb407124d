package catalog

import (
	"io"
	"time"

	"otabox/appliance/deflate"
	"otabox/appliance/espimage"
)

// gzips reports whether e is to be served gzip-compressed too: an ESP8266
// image --gzip names that is not compressed already. A signed image never
// is: the device checks the signature over the bytes it receives, which
// must be the ones that were signed (compress first, then sign).
func (opts Options) gzips(e *Entry) bool {
	return opts.Gzip != nil && opts.Gzip(e.Path) && e.Image != nil &&
		e.Image.Family == espimage.ESP8266 && !e.Image.Compressed && e.Image.Signature == nil
}

// withGzip returns a copy of e that also holds its image gzip-compressed
// by the deflate package (3-byte matches and cost-based parsing: 24 %
// fewer bytes than klauspost's level 9 on the samples). A disk file's
// compressed form is kept by the Cache under the image's SHA-256, so it
// is compressed once, not at every start, and served from that file
// rather than held in memory. The entry is copied, never changed: an
// older catalog may still be serving it.
func withGzip(e *Entry, opts Options) *Entry {
	cache := opts.Cache
	if e.pin == nil {
		cache = nil // embedded without a manifest, or a test's fs: in memory
	}
	g := *e
	if cache != nil {
		if f, ok := cache.LookupGzip(e.SHA256); ok {
			if f.Path == "" {
				return e // kept as incompressible
			}
			g.Gzip = &Variant{Size: f.Size, MD5: f.MD5, SHA256: f.SHA256, path: f.Path}
			return &g
		}
	}
	raw, err := io.ReadAll(e.Content())
	if err != nil {
		return e
	}
	start := time.Now()
	b := deflate.Gzip(raw, deflate.Options{})
	opts.Logger.Info("catalog: compressed for --gzip", "path", e.Path, "size", e.Size, "gzip", len(b), "took", time.Since(start).Round(time.Millisecond))
	var v *Variant // nil: incompressible, nothing to gain (the cache remembers that too)
	if int64(len(b)) < e.Size {
		v = &Variant{Size: int64(len(b)), MD5: md5hex(b), SHA256: sha256hex(b), content: b}
	}
	if cache != nil {
		var f GzipForm
		var keep []byte
		if v != nil {
			f, keep = GzipForm{Size: v.Size, MD5: v.MD5, SHA256: v.SHA256}, v.content
		}
		if f, err = cache.KeepGzip(e.SHA256, f, keep); err != nil {
			opts.Logger.Warn("catalog: could not keep the compressed image; it is held in memory and compressed again at the next start", "path", e.Path, "err", err)
		} else if v != nil {
			v.content, v.path = nil, f.Path // served from the kept file
		}
	}
	if v == nil {
		return e
	}
	g.Gzip = v
	return &g
}
