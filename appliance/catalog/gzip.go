package catalog

import (
	"bytes"
	"io"

	"github.com/klauspost/compress/gzip"
)

// withGzip returns a copy of e that also holds its image compressed as
// `gzip -9` would (klauspost/compress: the same format, about twice as
// fast as compress/gzip at this level). The entry is copied, never
// changed: an older catalog may still be serving it.
func withGzip(e *Entry) *Entry {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return e
	}
	if _, err := io.Copy(zw, e.Content()); err != nil || zw.Close() != nil {
		return e
	}
	if int64(buf.Len()) >= e.Size {
		return e // incompressible: nothing to gain
	}
	b := buf.Bytes()
	g := *e
	g.Gzip = &Variant{Size: int64(len(b)), MD5: md5hex(b), SHA256: sha256hex(b), content: b}
	return &g
}
