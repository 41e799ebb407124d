// Package catalog is otabox's immutable view of the firmware it serves:
// the folders a device can list, every file's digests and image
// description, its bytes (embedded, or a disk file held open), and the
// JSON listing of each folder, rendered once at load for each device
// family.
//
// A catalog is built once by Load and never changes; serving reads it with
// no locks. Anything a device could not use safely is left out at load,
// with a warning, rather than offered and then failed at download time.
package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"otabox/appliance/espimage"
	"otabox/appliance/fsimage"
)

// Type is the catalog's "type" field.
type Type string

const (
	Bin       Type = "bin"       // a firmware image a device can flash
	File      Type = "file"      // anything else
	Directory Type = "directory" // a sub-folder, listable with path=
)

// DefaultMaxFileSize bounds what is held in memory per file. The largest
// ESP flash is 16 MB (128 MB for the newest ESP32 parts); a file beyond this
// is not firmware.
const DefaultMaxFileSize = 128 << 20

// Entry is one file or folder of the catalog.
type Entry struct {
	Path  string // slash-separated path from the catalog root: "lab/fw.bin"
	Name  string // last element of Path
	Type  Type
	Size  int64
	Date  string          // MM/DD/YY, as the reference server's strftime('%x')
	Time  string          // HH:MM:SS
	Image *espimage.Image // set for Bin entries
	// FS is set for a File that is a filesystem image (LittleFS by its
	// superblock, SPIFFS by its name): what updateFS() may be given.
	FS *fsimage.Image
	// MD5 and SHA256 are lower-case hex of the bytes served (files only).
	MD5, SHA256 string
	// ModTime is the file's modification time when it was read.
	ModTime time.Time
	// Stamp identifies the file as it was read, so that a reload can reuse
	// an entry whose file has not changed (see Stamp for what counts).
	Stamp Stamp
	// Gzip is the image compressed once at load, for ESP8266 devices whose
	// running app inflates (core 2.7+); nil when not enabled or no smaller.
	Gzip *Variant
	// Verified says which --verify-key the image's signature verified
	// under ("key site.pem, RSA-2048 PKCS#1 v1.5 SHA-256"); empty when no
	// keys were given.
	Verified string

	content   io.ReaderAt
	fsChecked bool    // FS was looked for (add)
	data      []byte  // the bytes, when held in memory
	pin       *pinned // a disk file's open descriptor (see Open)
	copy      *copyAt // otabox's own copy of a disk file's bytes (see OpenCopy)
	staged    bool    // copy added to this Load's CopyBatch, not yet synced
}

// Variant is another form of an entry's bytes, served as the file itself.
// Its bytes are in memory (compressed at this load, or embedded by the
// build) or in a file a DigestCache keeps (compressed at an earlier start).
type Variant struct {
	Size        int64
	MD5, SHA256 string
	content     []byte
	path        string // the kept file, when content is nil
}

// Bytes returns the variant's bytes when they are in memory; nil when they
// are read from a file (see Open). Do not modify.
func (v *Variant) Bytes() []byte { return v.content }

// Open returns the variant's bytes for one download. A kept file is
// opened per download (its name is its source's digest and it is only
// ever replaced whole), and refused if its size is not the announced one.
func (v *Variant) Open() (io.ReadCloser, error) {
	if v.path == "" {
		return io.NopCloser(bytes.NewReader(v.content)), nil
	}
	return openKept(v.path, v.Size)
}

// openKept opens a file a DigestCache keeps for one download, refusing it
// unless it is a regular file of the announced size.
func openKept(path string, size int64) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		f.Close()
		return nil, fmt.Errorf("%s is not the %d bytes announced", path, size)
	}
	return f, nil
}

// Content returns a reader over the entry's bytes. It shares the catalog's
// copy (or the embedded data); nothing is copied per call.
func (e *Entry) Content() *io.SectionReader {
	return io.NewSectionReader(e.content, 0, e.Size)
}

// Bytes returns the entry's bytes when the catalog holds them in memory
// (a disk catalog), so they can be written without an intermediate copy;
// nil for embedded files, which are read through Content. Do not modify.
func (e *Entry) Bytes() []byte { return e.data }

// Dir is one listable folder.
type Dir struct {
	Path    string   // "" for the root
	Entries []*Entry // sorted by name
	json    [3][]byte
}

// JSON returns the folder's listing as the given family should see it:
// images another family cannot run are typed "file", so the device does not
// offer them. espimage.FamilyUnknown sees every image as "bin". The bytes
// are shared: do not modify them.
func (d *Dir) JSON(f espimage.Family) []byte {
	if int(f) >= len(d.json) {
		f = espimage.FamilyUnknown
	}
	return d.json[f]
}

// Catalog is the loaded, immutable catalog.
type Catalog struct {
	Source   string // what it was loaded from, for logs and the status page
	dirs     map[string]*Dir
	files    map[string]*Entry
	byDigest map[string][]*Entry
	all      []*Entry // files, sorted by path
	skipped  map[string]string
	pending  map[string]Stamp // files not read yet (Options.Budget)
	stats    Stats
	// copied is closed once the copies this Load wrote, and those of
	// every Load before it in the chain of Previous, are durable and
	// named (nil: nothing to wait for).
	copied <-chan struct{}
}

// copyAt is where an entry's copy is (OpenCopy), nil until there is one.
// The copy of bytes read at this Load becomes durable after the entry is
// published (Load syncs its batch in the background), so it is set then;
// an entry and its --gzip form share it.
type copyAt struct{ path atomic.Pointer[string] }

func keptAt(path string) *copyAt {
	c := new(copyAt)
	c.path.Store(&path)
	return c
}

// WaitCopies returns once the copies of c's files that its Load wrote
// (and every earlier Load in its chain of Previous) are durable, or were
// given up with a warning. Until then such a file is served from the
// catalog's own file.
func (c *Catalog) WaitCopies() {
	if c != nil && c.copied != nil {
		<-c.copied
	}
}

// Stats says how a Load came by its files.
type Stats struct {
	Read   int // read and hashed
	Cached int // described by the Cache, not read
	Reused int // unchanged since Previous
}

// Stats says how this catalog's Load came by its files.
func (c *Catalog) Stats() Stats { return c.stats }

// Pending reports a file that is in the folder but not yet read and hashed
// (Options.Budget): a device asking for it is told to retry shortly.
func (c *Catalog) Pending(p string) bool { _, ok := c.pending[p]; return ok }

// pendingAt returns the stamp of a file c left unread (c may be nil).
func (c *Catalog) pendingAt(p string) (Stamp, bool) {
	if c == nil {
		return Stamp{}, false
	}
	st, ok := c.pending[p]
	return st, ok
}

// PendingPaths are the files still to be read, in no order.
func (c *Catalog) PendingPaths() []string {
	out := make([]string, 0, len(c.pending))
	for p := range c.pending {
		out = append(out, p)
	}
	return out
}

// PendingCount is how many files, and bytes, are still to be read.
func (c *Catalog) PendingCount() (files int, bytes int64) {
	for _, st := range c.pending {
		files++
		bytes += st.Size
	}
	return files, bytes
}

// Options tune Load.
type Options struct {
	Source string
	Logger *slog.Logger
	// Embedded says the fs.FS already holds its files in memory (go:embed):
	// entries then read from it directly instead of keeping a copy.
	Embedded bool
	// Stamp dates files that carry no build stamp of their own and have no
	// modification time (embedded files): normally the binary's build time.
	Stamp time.Time
	// MaxFileSize skips larger files; 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// Gzip selects the ESP8266 images (by catalog path) to also keep
	// gzip-compressed; nil compresses none.
	Gzip func(path string) bool
	// Previous is the catalog this one replaces: files whose Stamp is
	// unchanged keep its entry (and bytes) without being read again.
	Previous *Catalog
	// Rehash reads and hashes every settled file again even when its stamp
	// is unchanged (SIGHUP: the operator asks for it).
	Rehash bool
	// Unstable lists files still being written: they keep their Previous
	// entry, or stay out until they settle. Never serve half a copy.
	Unstable map[string]bool
	// Settle, on a reload (Previous set), also counts as still being
	// written any file modified less than this long ago.
	Settle time.Duration
	// Manifest, for an Embedded fs, describes the files as they were at
	// build time, so that start-up reads and hashes nothing. Files it does
	// not describe (or whose size changed) are read as usual; Verify checks
	// the rest.
	Manifest *Manifest
	// Cache, when set, remembers what was learned from each disk file by
	// its stamp, so that an unchanged file is published again (after a
	// restart) without being read.
	Cache DigestCache
	// Budget bounds how many bytes of files this Load reads (those neither
	// the Cache nor Previous describe), smallest first: 0 reads them all,
	// a negative Budget none. The rest are Pending; a later Load with
	// Previous set goes on with them.
	Budget int64
	// Keys, when set, admit only images whose signature verifies under
	// one of them, the way the device will check it: an unsigned image,
	// or one signed by another key, is skipped with the reason.
	Keys []*espimage.Key

	keysID string    // identifies Keys in the Cache
	stats  *Stats    // where loadFile counts
	copies CopyBatch // this Load's copies (Cache set)
	buf    *[]byte   // a loadAll worker's buffer for pinned files' bytes
	missed bool      // the Cache had nothing on the file moments ago (loadAll's read pass)
}

// reuseMax bounds the buffer each loadAll worker keeps between files: the
// bytes of a pinned file are dropped once it is hashed (it is served from
// the file), so one buffer serves every file a worker reads, and a first
// start of 10,000 small images does not hand 160 MB to the garbage
// collector. A larger file gets a buffer of its own.
const reuseMax = 1 << 20

// buffer returns n bytes to read a pinned file into: *buf (grown if need
// be, valid until the next call with it) or, past reuseMax or with no buf,
// a slice of their own.
func buffer(buf *[]byte, n int64) []byte {
	if buf == nil || n > reuseMax {
		return make([]byte, n)
	}
	if int64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	return (*buf)[:n]
}

// Described is what a catalog learns from reading a file, kept by a
// DigestCache.
type Described struct {
	Type        Type
	MD5, SHA256 string
	Image       *espimage.Image
	Verified    string
}

// DigestCache keeps Described by path and stamp. keys identifies the
// --verify-key set the file was checked under ("" for none): a file
// verified under other keys is read again.
//
// It also keeps --gzip's compressed images by their source's SHA-256, so
// that each image is compressed once, not at every start.
//
// And it keeps a copy of each disk file's bytes by their SHA-256, in a
// file nothing else writes: downloads are sent from it, by reference to
// its pages (sendfile), and run to the end whatever happens to the
// catalog's file meanwhile. Copy reports the copy of a given size;
// Copies begins a batch in which one Load writes the copies of the bytes
// it has just hashed.
type DigestCache interface {
	Lookup(path string, st Stamp, keys string) (Described, bool)
	Remember(path string, st Stamp, keys string, d Described)
	LookupGzip(source string) (GzipForm, bool)
	KeepGzip(source string, f GzipForm, gz []byte) (GzipForm, error)
	Copy(sha256 string, size int64) (string, bool)
	Copies() CopyBatch
}

// CopyBatch writes one Load's copies and makes them durable together: a
// copy is only ever named once its bytes are on the disk, and one flush
// for the batch replaces an fsync per file, which was most of a
// 10,000-file first start on a disk or an SD card.
type CopyBatch interface {
	// Add writes b, whose SHA-256 the caller computed, toward its copy.
	Add(sha256 string, b []byte) error
	// Sync makes every copy added durable and returns each one's path by
	// SHA-256; a copy it does not return is not kept.
	Sync() (map[string]string, error)
}

// GzipEncoder names the encoder behind a kept compressed image: change it
// when deflate's output changes, and every image is compressed again.
const GzipEncoder = "otabox-deflate/1"

// GzipForm is a compressed image a DigestCache keeps: the digests of the
// compressed bytes and the file that holds them.
type GzipForm struct {
	Size        int64
	MD5, SHA256 string
	Path        string
}

// Dir returns the folder at p, a path already cleaned by Clean.
func (c *Catalog) Dir(p string) (*Dir, bool) { d, ok := c.dirs[p]; return d, ok }

// File returns the file at p, a path already cleaned by Clean.
func (c *Catalog) File(p string) (*Entry, bool) { e, ok := c.files[p]; return e, ok }

// Dirs returns the folders' paths, sorted ("" is the root).
func (c *Catalog) Dirs() []string {
	ds := make([]string, 0, len(c.dirs))
	for p := range c.dirs {
		ds = append(ds, p)
	}
	sort.Strings(ds)
	return ds
}

// Skipped returns the files left out at load, with the reason.
func (c *Catalog) Skipped() map[string]string { return c.skipped }

// Files returns every file, sorted by path.
func (c *Catalog) Files() []*Entry { return c.all }

// Running returns the images a device runs when it reports digest as its
// x-*-sketch-md5 or x-ESP32-sketch-sha256 (any letter case).
func (c *Catalog) Running(digest string) []*Entry {
	return c.byDigest[strings.ToLower(digest)]
}

// Load walks fsys and builds the catalog. Files that cannot be offered
// safely are skipped with a warning; only a failure to read the root itself
// is an error.
func Load(fsys fs.FS, opts Options) (*Catalog, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxFileSize == 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.Stamp.IsZero() {
		opts.Stamp = time.Now()
	}
	opts.keysID = keysID(opts.Keys)
	c := &Catalog{
		Source:   opts.Source,
		dirs:     map[string]*Dir{"": {Path: ""}},
		files:    map[string]*Entry{},
		byDigest: map[string][]*Entry{},
		skipped:  map[string]string{},
		pending:  map[string]Stamp{},
	}
	opts.stats = &c.stats
	if opts.Cache != nil && !opts.Embedded {
		opts.copies = opts.Cache.Copies()
	}
	if _, err := fs.ReadDir(fsys, "."); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", opts.Source, err)
	}
	skip := func(p, why string) {
		level := slog.LevelWarn
		if prev := opts.Previous; prev != nil && prev.skipped[p] == why {
			level = slog.LevelDebug // said when it was first left out, for this reason
		}
		opts.Logger.Log(context.Background(), level, "catalog: skipped", "path", p, "reason", why)
		c.skipped[p] = why
	}
	var found []unread // files, in walk order
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if p == "." {
			return err
		}
		if err != nil {
			skip(p, err.Error())
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil // dotfiles (.gitkeep, editor swap files) are never firmware
		}
		if why := checkName(name); why != "" {
			skip(p, why)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if why := reserved(p, d.IsDir()); why != "" {
			skip(p, why)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			c.dirs[p] = &Dir{Path: p}
			parent := c.dirs[parentOf(p)]
			parent.Entries = append(parent.Entries, &Entry{Path: p, Name: name, Type: Directory})
			return nil
		}
		found = append(found, unread{path: p, d: d})
		return nil
	})
	// Each file is stat'ed, pinned and looked up in the Cache on several
	// goroutines (a restart of 10,000 files spent 1.9 s on that on one
	// core); those neither Previous nor the Cache describe are read after.
	var later []unread // files to read
	for i, r := range loadAll(fsys, found, opts, false) {
		c.stats.Cached += r.stats.Cached
		c.stats.Reused += r.stats.Reused
		p := found[i].path
		_, wasPending := opts.Previous.pendingAt(p)
		switch {
		case r.why == unsettled && wasPending:
			c.pending[p] = r.st // there all along, changing now: read once it settles
		case r.why != "":
			skip(p, r.why)
		case r.e == nil:
			later = append(later, unread{p, found[i].d, r.st})
		default:
			c.add(r.e, opts, skip)
		}
	}
	if err != nil {
		if opts.copies != nil {
			opts.copies.Sync() // nothing names them; the next prune deletes them
		}
		c.Close(opts.Previous)
		return nil, fmt.Errorf("catalog %s: %w", opts.Source, err)
	}
	// Smallest first: the most files ready soonest, the largest last.
	sort.Slice(later, func(i, j int) bool { return later[i].st.Size < later[j].st.Size })
	var read int64
	var todo []unread
	for _, u := range later {
		if opts.Budget < 0 || (opts.Budget > 0 && read > 0 && read >= opts.Budget) {
			c.pending[u.path] = u.st
			continue
		}
		read += u.st.Size
		todo = append(todo, u)
	}
	for i, r := range loadAll(fsys, todo, opts, true) {
		c.stats.Read += r.stats.Read
		c.stats.Cached += r.stats.Cached
		c.stats.Reused += r.stats.Reused
		if r.why != "" {
			skip(todo[i].path, r.why)
			continue
		}
		c.add(r.e, opts, skip)
	}
	c.syncCopies(opts)
	sort.Slice(c.all, func(i, j int) bool { return c.all[i].Path < c.all[j].Path })
	for _, d := range c.dirs {
		sort.Slice(d.Entries, func(i, j int) bool { return d.Entries[i].Name < d.Entries[j].Name })
		for f := range d.json {
			d.json[f] = render(d, espimage.Family(f))
		}
	}
	return c, nil
}

// syncCopies writes the copies of the files this Load read, makes them
// durable in one batch and gives each entry its copy, in the background:
// the files are served at once, from their pinned files, and from their
// copies once those are durable (on a disk or an SD card, creating a first
// start's 10,000 copies took longer than reading and hashing the files).
// Each copy is read back from the pinned file and must have the SHA-256
// the entry announces; an entry whose copy could not be kept stays served
// from its pinned file (cut off if the file is rewritten in place). The
// copies of a chain of Loads are written in order, each after those of
// its Previous.
func (c *Catalog) syncCopies(opts Options) {
	if opts.copies == nil {
		return
	}
	var staged []*Entry
	for _, e := range c.all {
		if e.staged {
			e.staged = false
			staged = append(staged, e)
		}
	}
	done := make(chan struct{})
	c.copied = done
	go func(before *Catalog) {
		defer close(done)
		before.WaitCopies()
		start := time.Now()
		var buf []byte
		for _, e := range staged {
			if err := writeCopy(opts.copies, e, &buf); err != nil {
				opts.Logger.Warn("catalog: could not keep a copy; downloads are read from the file and cut off if it is rewritten in place", "path", e.Path, "err", err)
			}
		}
		paths, err := opts.copies.Sync()
		lost := 0
		for _, e := range staged {
			if p := paths[e.SHA256]; p != "" {
				e.copy.path.Store(&p)
			} else {
				lost++
			}
		}
		if lost > 0 {
			opts.Logger.Warn("catalog: could not keep copies; their downloads are read from the files and cut off if one is rewritten in place", "files", lost, "err", err)
		}
		if len(staged) > 0 {
			opts.Logger.Info("catalog: copies kept", "files", len(staged)-lost, "took", time.Since(start).Round(time.Millisecond))
		}
	}(opts.Previous)
}

// writeCopy adds e's bytes, read again from its pinned file, to batch:
// only bytes of the SHA-256 the entry announces, so a file rewritten
// since it was hashed gets no copy (it is read again once it settles).
func writeCopy(batch CopyBatch, e *Entry, buf *[]byte) error {
	b := buffer(buf, e.Size)
	if _, err := io.ReadFull(io.NewSectionReader(e.pin.f, 0, e.Size), b); err != nil {
		return err
	}
	if sha256hex(b) != e.SHA256 {
		return errors.New("the file changed since it was hashed")
	}
	return batch.Add(e.SHA256, b)
}

// add publishes a loaded file in its folder and the indexes.
func (c *Catalog) add(e *Entry, opts Options, skip func(p, why string)) {
	p := e.Path
	if e.Type == File && !e.fsChecked {
		e.FS, e.fsChecked = filesystem(e), true
	}
	if e.Gzip == nil && opts.gzips(e) {
		e = withGzip(e, opts)
	}
	// An entry reused from Previous was measured when it was added there.
	cost := 0
	if !opts.Previous.served(e) {
		cost = entryCost(e)
	}
	if cost > JSONBudget {
		skip(p, fmt.Sprintf("its catalog entry needs %d bytes of the device's %d-byte JSON buffer (name too long)", cost, JSONBudget))
		if e.pin != nil && !opts.Previous.holds(e) {
			e.pin.close()
		}
		return
	}
	parent := c.dirs[parentOf(p)]
	parent.Entries = append(parent.Entries, e)
	c.files[p] = e
	c.all = append(c.all, e)
	if e.Image != nil {
		for _, dg := range append(e.Image.Digests.RunningMD5, e.Image.Digests.RunningSHA256) {
			if dg != "" && !contains(c.byDigest[dg], e) {
				c.byDigest[dg] = append(c.byDigest[dg], e)
			}
		}
	}
}

// filesystem recognises a filesystem image from its first bytes (a
// LittleFS superblock) or its name (SPIFFS); nil for any other file.
func filesystem(e *Entry) *fsimage.Image {
	if fsimage.SPIFFSName(e.Name) {
		return fsimage.Recognise(e.Name, nil, e.Size)
	}
	head := make([]byte, min(e.Size, fsimage.HeadLen))
	n, _ := e.Content().ReadAt(head, 0)
	return fsimage.Recognise(e.Name, head[:n], e.Size)
}

// served reports whether c (which may be nil) publishes e itself: an
// entry reused from it was checked when it was added there.
func (c *Catalog) served(e *Entry) bool {
	if c == nil {
		return false
	}
	o, ok := c.files[e.Path]
	return ok && o == e
}

// holds reports whether c serves e's pinned file (c may be nil).
func (c *Catalog) holds(e *Entry) bool {
	if c == nil || e.pin == nil {
		return false
	}
	o, ok := c.files[e.Path]
	return ok && o.pin == e.pin
}

// keysID names a --verify-key set for the DigestCache.
func keysID(keys []*espimage.Key) string {
	if len(keys) == 0 {
		return ""
	}
	h := sha256.New()
	for _, k := range keys {
		der, _ := x509.MarshalPKIXPublicKey(k.Pub)
		h.Write(der)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// unread is a file Load has yet to read.
type unread struct {
	path string
	d    fs.DirEntry
	st   Stamp
}

// readAhead bounds the bytes of file contents loadAll holds at once (a
// larger file is read alone); readers is how many files it reads at once:
// more than cores, so that reading and writing files overlap the hashing.
const (
	readAhead = 32 << 20
	readers   = 8
)

// loaded is what loadFile made of one file.
type loaded struct {
	e     *Entry
	why   string
	st    Stamp
	stats Stats
}

// loadAll runs loadFile on a few goroutines at once, in the order given:
// the hashing uses every core, and reading overlaps it. With read false a
// file is only described from Previous or the Cache (or left for later);
// with read true, never more than readAhead bytes of files are held at
// once. Each file's result is at its index.
func loadAll(fsys fs.FS, todo []unread, opts Options, read bool) []loaded {
	out := make([]loaded, len(todo))
	sem := semaphore.NewWeighted(readAhead)
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(len(todo), readers) {
		wg.Go(func() {
			var buf []byte
			for i := range work {
				o := opts
				o.stats, o.buf, o.missed = &out[i].stats, &buf, read
				out[i].e, out[i].why, out[i].st = loadFile(fsys, todo[i].path, todo[i].d, o, read)
				if read {
					sem.Release(min(todo[i].st.Size, readAhead))
				}
			}
		})
	}
	for i, u := range todo {
		if read {
			sem.Acquire(context.Background(), min(u.st.Size, readAhead)) // never fails: no deadline
		}
		work <- i
	}
	close(work)
	wg.Wait()
	return out
}

// unsettled is why a file still being written stays out (loadFile): it
// joins once it stops changing. One the previous load left pending stays
// pending instead, so that a rule naming it keeps waiting for it.
const unsettled = "still being written; it joins the catalog once it stops changing"

// loadFile reads one file into an entry, or says why it stays out. With
// read false, a file that would have to be read (neither Previous nor the
// Cache describe it) is left for later: no entry, no reason, its stamp.
func loadFile(fsys fs.FS, p string, d fs.DirEntry, opts Options, read bool) (*Entry, string, Stamp) {
	info, err := fs.Stat(fsys, p) // follows a symlink (inside the root only, for os.Root)
	if err != nil {
		return nil, err.Error(), Stamp{}
	}
	if !info.Mode().IsRegular() {
		return nil, "not a regular file", Stamp{}
	}
	if info.Size() > opts.MaxFileSize {
		return nil, fmt.Sprintf("%d bytes is more than the %d-byte limit for a firmware file", info.Size(), opts.MaxFileSize), Stamp{}
	}
	stamp := StampOf(info)
	if prev := opts.Previous; prev != nil {
		old, ok := prev.files[p]
		if opts.Unstable[p] || (opts.Settle > 0 && !opts.Embedded && time.Since(info.ModTime()) < opts.Settle) {
			if ok {
				return old, "", Stamp{}
			}
			return nil, unsettled, stamp
		}
		if ok && !opts.Rehash && old.Stamp.Equal(stamp) {
			opts.stats.Reused++
			return old, "", Stamp{}
		}
	} else if opts.Unstable[p] {
		return nil, unsettled, stamp
	}
	if st, ok := opts.Previous.pendingAt(p); ok && !read && st.Equal(stamp) {
		// Left unread by the previous load, unchanged since: the Cache
		// had nothing on it then, and only reading it tells it more.
		return nil, "", st
	}
	e := &Entry{Path: p, Name: d.Name(), Type: File, Size: info.Size(), ModTime: info.ModTime(), Stamp: stamp}
	if m := opts.Manifest; m != nil && opts.Embedded && len(opts.Keys) == 0 {
		if why, ok := m.Skipped[p]; ok {
			return nil, why, Stamp{}
		}
		if f, ok := m.Files[p]; ok && f.Size == info.Size() {
			// Described at build time: nothing to read or hash now.
			if e.content, err = readerAt(fsys, p); err != nil {
				return nil, err.Error(), Stamp{}
			}
			e.MD5, e.SHA256, e.Image = f.MD5, f.SHA256, f.Image
			if opts.gzips(e) {
				e.Gzip = m.variant(f) // compressed at build time
			}
			if f.Image != nil {
				if why := unservable(f.Image); why != "" {
					return nil, why, Stamp{}
				}
				e.Type = Bin
			}
			stampEntry(e, info, opts)
			return e, "", Stamp{}
		}
	}
	if !opts.Embedded {
		// Pin the file: from here on the entry is this inode, whatever
		// happens to the path.
		f, err := fsys.Open(p)
		if err != nil {
			return nil, err.Error(), Stamp{}
		}
		if osf, ok := f.(*os.File); !ok {
			f.Close()
		} else if fi, err := osf.Stat(); err != nil || !StampOf(fi).Equal(e.Stamp) {
			osf.Close()
			if old, ok := opts.Previous.file(p); ok {
				return old, "", Stamp{}
			}
			return nil, "changed while it was opened; it joins the catalog once it stops changing", Stamp{}
		} else {
			e.pin = pin(osf)
		}
	}
	ok := false
	defer func() {
		if !ok && e.pin != nil {
			e.pin.close()
		}
	}()
	if e.pin != nil && opts.Cache != nil && !opts.missed {
		dsc, hit := opts.Cache.Lookup(p, e.Stamp, opts.keysID)
		if hit {
			// Described, but without its copy (made by an older otabox,
			// or deleted): read once more to make one.
			var kept string
			if kept, hit = opts.Cache.Copy(dsc.SHA256, e.Size); hit {
				e.copy = keptAt(kept)
			}
		}
		if hit {
			if dsc.Image != nil {
				if why := unservable(dsc.Image); why != "" {
					return nil, why, Stamp{}
				}
			}
			e.Type, e.MD5, e.SHA256, e.Image, e.Verified = dsc.Type, dsc.MD5, dsc.SHA256, dsc.Image, dsc.Verified
			e.content = e.pin.f
			stampEntry(e, info, opts)
			opts.stats.Cached++
			ok = true
			return e, "", Stamp{}
		}
	}
	if !read {
		return nil, "", e.Stamp
	}
	var b []byte
	if e.pin != nil {
		b = buffer(opts.buf, info.Size())
		if _, err = io.ReadFull(io.NewSectionReader(e.pin.f, 0, info.Size()), b); err != nil {
			return nil, err.Error(), Stamp{}
		}
	} else if b, err = fs.ReadFile(fsys, p); err != nil {
		return nil, err.Error(), Stamp{}
	}
	if !opts.Embedded {
		// A file written while it was read holds bytes of neither version:
		// keep what was served, or wait for the next reload.
		again, err := fs.Stat(fsys, p)
		changed := err != nil || !StampOf(again).Equal(e.Stamp)
		if e.pin != nil && !changed {
			fi, err := e.pin.f.Stat()
			changed = err != nil || !StampOf(fi).Equal(e.Stamp)
		}
		if changed {
			if old, ok := opts.Previous.file(p); ok {
				return old, "", Stamp{}
			}
			return nil, "changed while it was read; it joins the catalog once it stops changing", Stamp{}
		}
	}
	e.Size, e.content, e.data = int64(len(b)), bytes.NewReader(b), b
	if opts.Embedded {
		if ra, err := readerAt(fsys, p); err == nil {
			e.content, e.data = ra, nil // serve from the embedded data; b is dropped after load
		}
	}
	if e.pin != nil {
		e.content, e.data = e.pin.f, nil // served from the file; b is dropped after load
	}
	if len(b) == 0 && strings.HasSuffix(d.Name(), ".bin") {
		// An empty .bin is a copy that has not started (or a writer paused
		// after truncating): never offer it, as an image or as a file.
		return nil, "empty file", Stamp{}
	}
	if looksLikeImage(d.Name(), b) {
		img, err := espimage.Parse(b)
		if err != nil {
			return nil, "malformed firmware image: " + err.Error(), Stamp{}
		}
		if why := unservable(img); why != "" {
			return nil, why, Stamp{}
		}
		if len(opts.Keys) > 0 {
			how, err := espimage.Verify(b, img, opts.Keys)
			if err != nil {
				return nil, "signature: " + err.Error(), Stamp{}
			}
			e.Verified = how
		}
		e.Type, e.Image = Bin, img
		e.MD5, e.SHA256 = img.Digests.FileMD5, img.Digests.FileSHA256
	} else {
		e.MD5, e.SHA256 = md5hex(b), sha256hex(b)
	}
	opts.stats.Read++
	if e.pin != nil && opts.copies != nil {
		e.staged, e.copy = true, new(copyAt) // written after the Load (syncCopies)
		opts.Cache.Remember(p, e.Stamp, opts.keysID, Described{Type: e.Type, MD5: e.MD5, SHA256: e.SHA256, Image: e.Image, Verified: e.Verified})
	}
	stampEntry(e, info, opts)
	ok = true
	return e, "", Stamp{}
}

// unservable says why an image that parses must still stay out: an ESP32
// image for a chip id otabox cannot name would be listed and sent to an
// ESP32 whose chip is not yet known, and could be the wrong one.
func unservable(img *espimage.Image) string {
	if img.Family == espimage.ESP32 && !img.Chip.Known() {
		return fmt.Sprintf("ESP32 image for chip id %d, which otabox does not know; no device could be checked against it", uint16(img.Chip))
	}
	return ""
}

// readerAt opens p for serving straight from an in-memory fs (go:embed).
func readerAt(fsys fs.FS, p string) (io.ReaderAt, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return nil, err
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("%s: the file system cannot serve without a copy", p)
	}
	return ra, nil
}

// stampEntry sets the date and time the catalog lists: the image's own
// build stamp, else the file's modification time, else the binary's build
// time (embedded files have no mtime).
func stampEntry(e *Entry, info fs.FileInfo, opts Options) {
	stamp := info.ModTime()
	if stamp.IsZero() || opts.Embedded {
		stamp = opts.Stamp
	}
	e.Date, e.Time = stamp.Local().Format("01/02/06"), stamp.Local().Format("15:04:05")
	if e.Image != nil && e.Image.Date != "" {
		e.Date, e.Time = e.Image.Date, e.Image.Time
	}
}

// looksLikeImage decides which files must parse as firmware: anything that
// starts with the image magic, and gzip files named as ESP8266 images.
func looksLikeImage(name string, b []byte) bool {
	if len(b) > 0 && b[0] == espimage.Magic {
		return true
	}
	gz := len(b) >= 2 && b[0] == 0x1F && b[1] == 0x8B
	return gz && (strings.HasSuffix(name, ".bin") || strings.HasSuffix(name, ".bin.gz"))
}

// checkName keeps names to what travels through a device unharmed: the
// device pastes the name raw into its request line and unescaped into its
// HTML page (protocol spec §3.1, §8.5).
func checkName(name string) string {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Sprintf("name has %q at byte %d; devices can only fetch names of A-Z a-z 0-9 . _ -", c, i)
		}
	}
	return ""
}

func contains(es []*Entry, e *Entry) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

// Clean turns a folder or file path as a device sends it (path= values
// ".", "", "sub", "/sub", "sub/", "./sub"; request-targets "/fw.bin",
// "./fw.bin", "bin//fw.bin") into the catalog's key: slash-separated,
// no empty or "." elements, "" for the root. It refuses anything that could
// name a place outside the catalog.
func Clean(p string) (string, error) {
	if strings.ContainsAny(p, "\\\x00") {
		return "", errors.New("path contains a backslash or NUL")
	}
	var parts []string
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "", ".":
			continue
		case "..":
			return "", errors.New(`path contains ".."`)
		}
		// Catalog names are [A-Za-z0-9._-] only, so anything else (encoded
		// separators, over-long UTF-8, control bytes) names nothing here.
		if why := checkName(el); why != "" {
			return "", fmt.Errorf("path element %q: %s", el, why)
		}
		parts = append(parts, el)
	}
	return strings.Join(parts, "/"), nil
}

// file is the entry at p in c, which may be nil.
func (c *Catalog) file(p string) (*Entry, bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.files[p]
	return e, ok
}

// reserved says why a catalog path can never be reached by a device, or
// "": a top-level file or folder the status page owns (its API, metrics,
// the favicon), or a top-level file named like a device endpoint
// (/_catalog, the default /update), which answers instead of the file. A
// folder of those names is reachable ("/update/fw.bin").
func reserved(p string, dir bool) string {
	switch p {
	case "api", "admin", "metrics", "healthz", "favicon.ico", "station":
		return "the name is reserved for the status page and its API; rename it"
	case "esphome":
		return "the name is reserved for ESPHome's manifests (/esphome/...); rename it"
	case "esp32fota":
		return "the name is reserved for esp32FOTA's manifests (/esp32fota/...); rename it"
	case "update", "_catalog":
		if !dir {
			return "the name is a device endpoint (/" + p + "), which answers instead of the file; rename it"
		}
	}
	return ""
}

// parentOf returns the catalog key of p's folder ("" for the root).
func parentOf(p string) string {
	if d := path.Dir(p); d != "." {
		return d
	}
	return ""
}
