package catalog_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// openFDs counts this process's open descriptors on files under dir.
func openFDs(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

func diskCatalog(t *testing.T, n int) (string, *os.Root) {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 8 << 10, Seed: uint64(i)})
		os.WriteFile(filepath.Join(dir, "fw"+string(rune('a'+i%26))+string(rune('a'+i/26))+".bin"), b, 0o644)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return dir, root
}

// TestPinnedDescriptorsBounded: 1,000 reloads that re-read every file
// (published, or discarded as a watcher does when nothing changed) leave
// exactly one descriptor per served file open.
func TestPinnedDescriptorsBounded(t *testing.T) {
	dir, root := diskCatalog(t, 10)
	cur, err := catalog.Load(root.FS(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Pinned() != 10 {
		t.Fatalf("%d files pinned, want 10", cur.Pinned())
	}
	for i := 0; i < 1000; i++ {
		next, err := catalog.Load(root.FS(), catalog.Options{Previous: cur, Rehash: true})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			cur.Close(next) // published: the old catalog is retired
			cur = next
		} else {
			next.Close(cur) // discarded
		}
	}
	if got := openFDs(t, dir); got != 10 {
		t.Errorf("%d descriptors open after 1,000 reloads, want 10", got)
	}
	cur.Close(nil)
	if got := openFDs(t, dir); got != 0 {
		t.Errorf("%d descriptors left after closing the catalog", got)
	}
}

// TestPinnedFileOutlivesItsPath: a download opened from an entry reads the
// bytes that were hashed even after the path is replaced by a rename or
// deleted; a change in place is reported.
func TestPinnedFileOutlivesItsPath(t *testing.T) {
	dir, root := diskCatalog(t, 2)
	cat, err := catalog.Load(root.FS(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close(nil)
	e := cat.Files()[0]
	want, _ := os.ReadFile(filepath.Join(dir, e.Path))
	other, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 9 << 10, Seed: 99})
	tmp := filepath.Join(dir, ".new")
	os.WriteFile(tmp, other, 0o644)
	os.Rename(tmp, filepath.Join(dir, e.Path))
	got := readAll(t, e)
	if string(got) != string(want) || e.Changed() {
		t.Errorf("after a rename over it: %d bytes (changed %v), want the %d hashed", len(got), e.Changed(), len(want))
	}
	e2 := cat.Files()[1]
	want2, _ := os.ReadFile(filepath.Join(dir, e2.Path))
	os.Remove(filepath.Join(dir, e2.Path))
	if got := readAll(t, e2); string(got) != string(want2) {
		t.Errorf("after removal: %d bytes, want %d", len(got), len(want2))
	}
	cat2, _ := catalog.Load(root.FS(), catalog.Options{})
	defer cat2.Close(nil)
	e3 := cat2.Files()[0]
	os.WriteFile(filepath.Join(dir, e3.Path), want, 0o644) // in place: same inode
	if !e3.Changed() {
		t.Error("a rewrite in place is not reported")
	}
}

// TestChangedAllocatesNothing: a running download asks Changed twice per
// chunk; on Linux it reads the pinned file's stamp without an allocation,
// and tells a rewrite in place as before.
func TestChangedAllocatesNothing(t *testing.T) {
	dir, root := diskCatalog(t, 1)
	cat, err := catalog.Load(root.FS(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close(nil)
	e := cat.Files()[0]
	if n := testing.AllocsPerRun(100, func() { e.Changed() }); n != 0 && runtime.GOOS == "linux" {
		t.Errorf("Changed allocates %.0f times a call", n)
	}
	if e.Changed() {
		t.Fatal("an untouched file is reported changed")
	}
	b, _ := os.ReadFile(filepath.Join(dir, e.Path))
	b[len(b)-1] ^= 0xff
	os.WriteFile(filepath.Join(dir, e.Path), b, 0o644)
	if !e.Changed() {
		t.Error("a rewrite in place is not reported")
	}
}

func readAll(t *testing.T, e *catalog.Entry) []byte {
	t.Helper()
	rc, err := e.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b := make([]byte, e.Size+1)
	n, _ := rc.Read(b)
	for m := n; m > 0 && n < len(b); n += m {
		m, _ = rc.Read(b[n:])
	}
	return b[:n]
}

// mapCache is a DigestCache in memory that counts what it is asked. Its
// copies go to a TempDir, written after each Load in the background: a
// test waits for them (t.Cleanup(cat.WaitCopies)) before it is removed.
type mapCache struct {
	mu           sync.Mutex
	m            map[string]catalog.Described
	hits, misses int
	dir          string            // where copies are kept
	copies       map[string]string // SHA-256 to kept copy
	hold         chan struct{}     // when set, Sync waits until it is closed
}

func (c *mapCache) key(p string, st catalog.Stamp, keys string) string {
	return p + "|" + st.ModTime.String() + "|" + keys
}

func (c *mapCache) Lookup(p string, st catalog.Stamp, keys string) (catalog.Described, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[c.key(p, st, keys)]
	if ok {
		c.hits++
	} else {
		c.misses++
	}
	return d, ok
}

func (c *mapCache) Remember(p string, st catalog.Stamp, keys string, d catalog.Described) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[c.key(p, st, keys)] = d
}

// Copy and Copies keep copies in a folder of the test's.
func (c *mapCache) Copy(sha string, size int64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.copies[sha]
	if fi, err := os.Stat(p); !ok || err != nil || fi.Size() != size {
		return "", false
	}
	return p, true
}

func (c *mapCache) Copies() catalog.CopyBatch { return &mapBatch{c: c, tmp: map[string]string{}} }

// mapBatch writes each copy under a temporary name and names it at Sync,
// as the store does: a copy used before Sync would not be found.
type mapBatch struct {
	c   *mapCache
	mu  sync.Mutex
	tmp map[string]string
}

func (b *mapBatch) Add(sha string, data []byte) error {
	p := filepath.Join(b.c.dir, sha+".tmp")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tmp[sha] = p
	return nil
}

func (b *mapBatch) Sync() (map[string]string, error) {
	if b.c.hold != nil {
		<-b.c.hold
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	out := map[string]string{}
	for sha, tmp := range b.tmp {
		p := filepath.Join(b.c.dir, sha)
		if err := os.Rename(tmp, p); err != nil {
			return out, err
		}
		b.c.copies[sha], out[sha] = p, p
	}
	return out, nil
}

func (c *mapCache) LookupGzip(string) (catalog.GzipForm, bool) { return catalog.GzipForm{}, false }

func (c *mapCache) KeepGzip(string, catalog.GzipForm, []byte) (catalog.GzipForm, error) {
	return catalog.GzipForm{}, errors.New("this cache keeps no compressed images")
}

// TestCacheAndBudget: with a Budget, files are read smallest first and
// the rest are Pending (not listed); a later load goes on with them; a
// load with the cache filled reads nothing and describes every file the
// same way.
func TestCacheAndBudget(t *testing.T) {
	_, root := diskCatalog(t, 40)
	cache := &mapCache{m: map[string]catalog.Described{}, dir: t.TempDir(), copies: map[string]string{}}
	first, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Budget: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(nil)
	t.Cleanup(first.WaitCopies)
	if n, _ := first.PendingCount(); n != 39 || len(first.Files()) != 1 || first.Stats().Read != 1 {
		t.Fatalf("budget of one file: %d pending, %d published, %+v", n, len(first.Files()), first.Stats())
	}
	all, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Previous: first})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close(nil)
	t.Cleanup(all.WaitCopies)
	if n, _ := all.PendingCount(); n != 0 || len(all.Files()) != 40 || all.Stats().Read != 39 {
		t.Fatalf("second load: %d pending, %d published, %+v", n, len(all.Files()), all.Stats())
	}
	all.WaitCopies() // a file is described without reading only once its copy is kept
	again, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Budget: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(nil)
	t.Cleanup(again.WaitCopies)
	if st := again.Stats(); st.Read != 0 || st.Cached != 40 || len(again.Files()) != 40 {
		t.Fatalf("with the cache: %+v, %d published", st, len(again.Files()))
	}
	for _, e := range all.Files() {
		c, ok := again.File(e.Path)
		if !ok || c.MD5 != e.MD5 || c.Image.Digests.RunningMD5[2] != e.Image.Digests.RunningMD5[2] || c.Date != e.Date {
			t.Errorf("%s described differently from the cache", e.Path)
		}
	}
}

// TestUnreadFilesAreNotAskedAboutAgain: a load round asks the Cache only
// about files it has not asked about before, or that changed since, and
// once each: a file the previous round left unread is read or left
// again, not looked up, and a file the round reads is not asked about
// again before it is read (a 10,000-file first start asked 25,000 times
// over four rounds).
func TestUnreadFilesAreNotAskedAboutAgain(t *testing.T) {
	dir, root := diskCatalog(t, 10)
	cache := &mapCache{m: map[string]catalog.Described{}, dir: t.TempDir(), copies: map[string]string{}}
	asked := func() int { cache.mu.Lock(); defer cache.mu.Unlock(); return cache.hits + cache.misses }
	first, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Budget: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(nil)
	t.Cleanup(first.WaitCopies)
	before := asked()
	if n, _ := first.PendingCount(); n != 9 || before != 10 { // ten in the walk
		t.Fatalf("first round: %d pending, %d lookups", n, before)
	}
	// One unread file changes: it is asked about again; the other eight
	// are not, nor is the one this round reads.
	var changed string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if first.Pending(e.Name()) {
			changed = e.Name()
			os.Chtimes(filepath.Join(dir, changed), time.Now(), time.Now().Add(-time.Hour))
			break
		}
	}
	second, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Budget: 1, Previous: first})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(first)
	t.Cleanup(second.WaitCopies)
	if n, _ := second.PendingCount(); n != 8 || len(second.Files()) != 2 {
		t.Fatalf("second round: %d pending, %d published", n, len(second.Files()))
	}
	if got := asked() - before; got != 1 {
		t.Errorf("second round asked the cache %d times, want 1 (the changed file %s)", got, changed)
	}
}

// TestCopyHoldsTheHashedBytes: a Load with a DigestCache keeps a copy of
// each file's bytes as hashed; OpenCopy reads them even after the file is
// rewritten in place (Open's reader would then be Changed). A later Load
// finds the copies and reads nothing; one whose copy is gone reads that
// file again, to keep a new one.
func TestCopyHoldsTheHashedBytes(t *testing.T) {
	dir, root := diskCatalog(t, 3)
	cache := &mapCache{m: map[string]catalog.Described{}, dir: t.TempDir(), copies: map[string]string{}}
	cat, err := catalog.Load(root.FS(), catalog.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close(nil)
	t.Cleanup(cat.WaitCopies)
	e, _ := cat.File("fwaa.bin")
	cat.WaitCopies()
	want, _ := os.ReadFile(filepath.Join(dir, "fwaa.bin"))
	f, err := os.OpenFile(filepath.Join(dir, "fwaa.bin"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, len(want)), 0) // in place, same size
	f.Close()
	if !e.Changed() {
		t.Fatal("a rewrite in place was not seen")
	}
	c, ok := e.OpenCopy()
	if !ok {
		t.Fatal("no copy kept")
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if !bytes.Equal(got, want) {
		t.Error("the copy does not hold the bytes hashed")
	}
	os.WriteFile(filepath.Join(dir, "fwaa.bin"), want, 0o644) // back as it was (a new stamp: read again)

	again, err := catalog.Load(root.FS(), catalog.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(nil)
	t.Cleanup(again.WaitCopies)
	if st := again.Stats(); st.Read != 1 || st.Cached != 2 {
		t.Errorf("second load: %+v, want the rewritten file read and 2 cached", st)
	}
	e, _ = again.File("fwba.bin")
	again.WaitCopies()
	os.Remove(cache.copies[e.SHA256])
	third, err := catalog.Load(root.FS(), catalog.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close(nil)
	t.Cleanup(third.WaitCopies)
	if st := third.Stats(); st.Read != 1 || st.Cached != 2 {
		t.Errorf("after a copy was deleted: %+v, want that file read again", st)
	}
	third.WaitCopies()
	if e, _ := third.File("fwba.bin"); e == nil {
		t.Fatal("fwba.bin left the catalog")
	} else if c, ok := e.OpenCopy(); !ok {
		t.Error("no new copy kept")
	} else {
		c.Close()
	}
}

// TestFilesServeBeforeTheirCopiesAreDurable: Load publishes the files it
// read without waiting for their copies to reach the disk (a first start
// of 10,000 files on an SD card spent most of its time there); until the
// batch is durable each is served from its own pinned file, and from its
// copy after, with the copies' one line in the log.
func TestFilesServeBeforeTheirCopiesAreDurable(t *testing.T) {
	dir, root := diskCatalog(t, 2)
	var logs bytes.Buffer
	cache := &mapCache{m: map[string]catalog.Described{}, dir: t.TempDir(), copies: map[string]string{}, hold: make(chan struct{})}
	cat, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close(nil)
	t.Cleanup(cat.WaitCopies)
	e, ok := cat.File("fwaa.bin")
	if !ok {
		t.Fatal("not published while its copy is being written")
	}
	if c, ok := e.OpenCopy(); ok {
		c.Close()
		t.Fatal("a copy was opened before its batch was durable")
	}
	want, _ := os.ReadFile(filepath.Join(dir, "fwaa.bin"))
	if got := readAll(t, e); !bytes.Equal(got, want) {
		t.Fatal("meanwhile the file does not serve its bytes")
	}
	close(cache.hold)
	cat.WaitCopies()
	c, ok := e.OpenCopy()
	if !ok {
		t.Fatal("no copy once the batch was durable")
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if !bytes.Equal(got, want) {
		t.Error("the copy does not hold the file's bytes")
	}
	if line := logs.String(); !strings.Contains(line, `msg="catalog: copies kept" files=2`) {
		t.Errorf("log: %q", line)
	}
}

// TestCopyThatCannotBeWrittenIsWarned: when the cache cannot keep a copy
// (a full disk, a folder gone), a WARN names the file and the reason, and
// the file is published anyway, its downloads read from the file itself.
func TestCopyThatCannotBeWrittenIsWarned(t *testing.T) {
	dir, root := diskCatalog(t, 1)
	var logs bytes.Buffer
	cache := &mapCache{m: map[string]catalog.Described{}, dir: filepath.Join(t.TempDir(), "gone"), copies: map[string]string{}}
	cat, err := catalog.Load(root.FS(), catalog.Options{Cache: cache, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close(nil)
	cat.WaitCopies()
	if line := logs.String(); !strings.Contains(line, "level=WARN") || !strings.Contains(line, "could not keep a copy") ||
		!strings.Contains(line, "path=fwaa.bin") || !strings.Contains(line, "no such file or directory") {
		t.Errorf("log: %q", line)
	}
	e, ok := cat.File("fwaa.bin")
	if !ok {
		t.Fatal("the file was not published")
	}
	if c, ok := e.OpenCopy(); ok {
		c.Close()
		t.Error("a copy that was never written was opened")
	}
	want, _ := os.ReadFile(filepath.Join(dir, "fwaa.bin"))
	if got := readAll(t, e); !bytes.Equal(got, want) {
		t.Error("the file does not serve its bytes")
	}
}
