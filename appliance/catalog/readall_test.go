package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// heldCache is a DigestCache that measures how many bytes of file
// contents Load holds at once: Remember is told of each file (its size in
// its stamp) while loadFile still holds its bytes, and waits a moment, as
// a slow disk would.
type heldCache struct {
	mu        sync.Mutex
	held, max int64
	calls     int
}

func (c *heldCache) Lookup(string, Stamp, string) (Described, bool)      { return Described{}, false }
func (c *heldCache) LookupGzip(string) (GzipForm, bool)                  { return GzipForm{}, false }
func (c *heldCache) KeepGzip(string, GzipForm, []byte) (GzipForm, error) { return GzipForm{}, nil }
func (c *heldCache) Copy(string, int64) (string, bool)                   { return "", false }
func (c *heldCache) Copies() CopyBatch                                   { return c }
func (c *heldCache) Sync() (map[string]string, error)                    { return nil, nil }
func (c *heldCache) Add(string, []byte) error                            { return fmt.Errorf("not kept (test)") }
func (c *heldCache) Remember(_ string, st Stamp, _ string, _ Described) {
	c.mu.Lock()
	c.held += st.Size
	c.max = max(c.max, c.held)
	c.calls++
	c.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	c.mu.Lock()
	c.held -= st.Size
	c.mu.Unlock()
}

// TestFilesAreReadSeveralAtOnceWithinReadAhead: files a load has not seen
// are read several at a time (reading overlaps hashing), never more
// than readAhead bytes of them held at once, and every one is loaded.
func TestFilesAreReadSeveralAtOnceWithinReadAhead(t *testing.T) {
	dir := t.TempDir()
	const files, size = 24, 3 << 20
	for i := range files {
		b := make([]byte, size)
		b[0] = byte(i)
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.dat", i)), b, 0o644)
	}
	cache := &heldCache{}
	c, err := Load(os.DirFS(dir), Options{Cache: cache, Budget: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(nil)
	t.Cleanup(c.WaitCopies)
	if n := len(c.Files()); n != files || c.Stats().Read != files || cache.calls != files {
		t.Fatalf("loaded %d files, read %d, remembered %d; want %d", n, c.Stats().Read, cache.calls, files)
	}
	t.Logf("at most %d bytes held at once (%d files)", cache.max, cache.max/size)
	if cache.max > readAhead {
		t.Errorf("%d bytes of files held at once, more than readAhead (%d)", cache.max, readAhead)
	}
	if cache.max < 2*size {
		t.Errorf("files were read one at a time (%d bytes held at most)", cache.max)
	}
}
