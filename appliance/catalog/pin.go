package catalog

import (
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
)

// pinned is a disk file held open from the moment its entry is published
// until the catalog that holds it is retired: whatever happens to the path
// (replaced by a rename, deleted), the entry keeps the inode whose bytes
// were hashed and announced.
type pinned struct {
	mu     sync.RWMutex
	f      *os.File
	fd     int
	closed bool
}

func pin(f *os.File) *pinned { return &pinned{f: f, fd: int(f.Fd())} }

func (p *pinned) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.f.Close()
	}
}

// ErrRetired is Open's answer for an entry whose catalog was replaced and
// whose file was released: the caller asks the current catalog again.
var ErrRetired = errors.New("the file left the catalog while the request was decided")

// Open returns the entry's bytes for one download. A pinned disk file is
// reopened through /proc/self/fd: a descriptor of its own on the pinned
// inode, with its own offset, which still reads the announced bytes if the
// path was replaced or deleted since. Where /proc is not mounted it reads
// the pinned descriptor at offsets. In-memory entries read their bytes.
func (e *Entry) Open() (io.ReadCloser, error) {
	p := e.pin
	if p == nil {
		return io.NopCloser(e.Content()), nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrRetired
	}
	if f, err := os.Open("/proc/self/fd/" + strconv.Itoa(p.fd)); err == nil {
		return f, nil
	}
	return io.NopCloser(io.NewSectionReader(p.f, 0, e.Size)), nil
}

// OpenCopy opens otabox's own copy of the entry's bytes (see DigestCache)
// for one download: a file nothing else writes, so it can be sent by
// reference to its pages and needs no Changed checks. False when the
// entry has none, its copy is not durable yet (Catalog.WaitCopies), or it
// is gone (pruned after a reload); Open then reads the catalog's file.
func (e *Entry) OpenCopy() (*os.File, bool) {
	if e.copy == nil {
		return nil, false
	}
	p := e.copy.path.Load()
	if p == nil {
		return nil, false // its batch is not durable yet
	}
	f, err := openKept(*p, e.Size)
	return f, err == nil
}

// Changed reports a pinned file modified in place since it was read: its
// size, modification or change time moved. Bytes read from it now may not
// be the ones announced, so a download in progress is cut off (the watcher
// re-reads the file and publishes it again).
func (e *Entry) Changed() bool {
	p := e.pin
	if p == nil {
		return false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false // retired, not changed: the download's own descriptor reads on
	}
	now, err := fstamp(p)
	if err != nil {
		return true
	}
	if now.Size != e.Stamp.Size || !now.ModTime.Equal(e.Stamp.ModTime) || now.Ino != e.Stamp.Ino {
		return true
	}
	// A write moves ctime, and so does a metadata change that sets mtime
	// back (cp -p into the file); an unlink or a rename over the path
	// moves it too, but also the link count, and leaves the bytes alone.
	return now.Ctime != e.Stamp.Ctime && now.Nlink == e.Stamp.Nlink
}

// Close releases the pinned files of c's entries that keep does not also
// hold (keep may be nil). Call it once c is no longer served; downloads
// already running read through descriptors of their own. While c's
// copies are still being written (from those pinned files), the files
// are released once they are: Close does not wait, so that the watcher
// publishing the next round of a first start does not wait for a disk.
func (c *Catalog) Close(keep *Catalog) {
	if c == nil {
		return
	}
	release := func() {
		for _, e := range c.all {
			if e.pin != nil && !keep.holds(e) {
				e.pin.close()
			}
		}
	}
	if c.copied != nil {
		select {
		case <-c.copied:
		default:
			go func() { c.WaitCopies(); release() }()
			return
		}
	}
	release()
}

// Pinned counts the open descriptors c holds (the leak test checks it).
func (c *Catalog) Pinned() int {
	n := 0
	for _, e := range c.all {
		if e.pin != nil {
			e.pin.mu.RLock()
			if !e.pin.closed {
				n++
			}
			e.pin.mu.RUnlock()
		}
	}
	return n
}
