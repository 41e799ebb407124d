//go:build !linux

package catalog

import "io/fs"

// sysStamp adds nothing off Linux: size and mtime decide there.
func sysStamp(fs.FileInfo, *Stamp) {}

// fstamp is the stamp of a pinned file.
func fstamp(p *pinned) (Stamp, error) {
	fi, err := p.f.Stat()
	if err != nil {
		return Stamp{}, err
	}
	return StampOf(fi), nil
}
