package appliance

import (
	"errors"
	"fmt"
	"strings"

	"otabox/appliance/catalog"
	"otabox/appliance/policy"
	"otabox/appliance/store"
	"otabox/appliance/suggest"
)

// ErrNotInCatalog is a batch naming an image the catalog does not hold.
var ErrNotInCatalog = errors.New("not a firmware image in the catalog")

// NewBatch is the factory batch name that gives image (a catalog path as
// the operator typed it) to the devices asking /update, checked against
// cat: `otabox batch start` and the status page open batches through it,
// so both refuse the same way. The image's digests and version are kept
// with the batch, for its report.
func NewBatch(cat *catalog.Catalog, name, image string) (store.Batch, *catalog.Entry, error) {
	if err := policy.CheckBatchName(name); err != nil {
		return store.Batch{}, nil, err
	}
	p, err := catalog.Clean(image)
	if err != nil {
		return store.Batch{}, nil, fmt.Errorf("image %q: %w", image, err)
	}
	e, ok := cat.File(p)
	if !ok || e.Type != catalog.Bin {
		var images []string
		for _, f := range cat.Files() {
			if f.Type == catalog.Bin {
				images = append(images, f.Path)
			}
		}
		msg := fmt.Sprintf("%q is %s (%s)", image, ErrNotInCatalog, cat.Source)
		if s := suggest.Closest(p, images); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		} else if len(images) > 0 {
			msg += "; it has " + strings.Join(images, ", ")
		}
		return store.Batch{}, nil, suggestion{msg}
	}
	b := store.Batch{Name: name, Image: p, ImageMD5: e.MD5, ImageSHA256: e.SHA256, ImageVersion: e.Image.Version}
	return b, e, nil
}

// suggestion is ErrNotInCatalog with what the catalog has instead.
type suggestion struct{ msg string }

func (s suggestion) Error() string { return s.msg }
func (s suggestion) Unwrap() error { return ErrNotInCatalog }
