package watch

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

type published struct {
	mu   sync.Mutex
	cats []*catalog.Catalog
}

func (p *published) add(c *catalog.Catalog) { p.mu.Lock(); p.cats = append(p.cats, c); p.mu.Unlock() }
func (p *published) last() *catalog.Catalog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cats[len(p.cats)-1]
}
func (p *published) all() []*catalog.Catalog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*catalog.Catalog(nil), p.cats...)
}

func image(t *testing.T, seed uint64) []byte {
	b, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never: %s", what)
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	a1, a2, b := image(t, 1), image(t, 2), image(t, 3)
	os.WriteFile(filepath.Join(dir, "a.bin"), a1, 0o644)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))
	load := func(prev *catalog.Catalog, unstable map[string]bool, rehash bool) (*catalog.Catalog, error) {
		return catalog.Load(root.FS(), catalog.Options{Previous: prev, Unstable: unstable, Logger: log, Rehash: rehash})
	}
	first, _ := load(nil, nil, false)
	pub := &published{cats: []*catalog.Catalog{first}}
	reload := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, Config{Dir: dir, Load: load, Publish: pub.add, Logger: log, Settle: 200 * time.Millisecond, Rescan: 500 * time.Millisecond, Reload: reload}, first)
	has := func(p, sum string) func() bool {
		return func() bool { e, ok := pub.last().File(p); return ok && e.MD5 == sum }
	}

	t.Run("a file copied slowly appears only whole", func(t *testing.T) {
		f, _ := os.Create(filepath.Join(dir, "b.bin"))
		for i := 0; i < 4; i++ {
			f.Write(b[i*len(b)/4 : (i+1)*len(b)/4])
			f.Sync()
			time.Sleep(120 * time.Millisecond)
		}
		f.Close()
		eventually(t, "b.bin published", has("b.bin", md5hex(b)))
		for _, c := range pub.all() {
			if e, ok := c.File("b.bin"); ok && e.MD5 != md5hex(b) {
				t.Fatalf("a catalog served b.bin half-written (%d bytes)", e.Size)
			}
		}
	})
	t.Run("replaced in place", func(t *testing.T) {
		os.WriteFile(filepath.Join(dir, "a.bin"), a2, 0o644)
		eventually(t, "new a.bin", has("a.bin", md5hex(a2)))
	})
	t.Run("broken file stays out with a log line", func(t *testing.T) {
		os.WriteFile(filepath.Join(dir, "c.bin"), a1[:1000], 0o644)
		os.WriteFile(filepath.Join(dir, "d.bin"), a1, 0o644)
		eventually(t, "d.bin published", has("d.bin", md5hex(a1)))
		if _, ok := pub.last().File("c.bin"); ok {
			t.Fatal("malformed c.bin published")
		}
		logMu.Lock()
		defer logMu.Unlock()
		if !bytes.Contains(logs.Bytes(), []byte("c.bin")) {
			t.Errorf("no log line for c.bin:\n%s", logs.String())
		}
	})
	t.Run("new sub-folder followed", func(t *testing.T) {
		os.Mkdir(filepath.Join(dir, "lab"), 0o755)
		time.Sleep(300 * time.Millisecond)
		os.WriteFile(filepath.Join(dir, "lab", "e.bin"), b, 0o644)
		eventually(t, "lab/e.bin published", has("lab/e.bin", md5hex(b)))
	})
	t.Run("removed", func(t *testing.T) {
		os.Remove(filepath.Join(dir, "a.bin"))
		eventually(t, "a.bin gone", func() bool { _, ok := pub.last().File("a.bin"); return !ok })
	})
	t.Run("reload on request (SIGHUP)", func(t *testing.T) {
		n := len(pub.all())
		reload <- struct{}{}
		eventually(t, "reload logged", func() bool {
			logMu.Lock()
			defer logMu.Unlock()
			return bytes.Contains(logs.Bytes(), []byte("reload requested"))
		})
		time.Sleep(600 * time.Millisecond) // past the settle period the reload waits
		if len(pub.all()) != n {
			t.Error("a reload with no change published a new catalog")
		}
	})
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestManyAddedFilesAreOneLogLine: a publish that adds a few files names
// each at INFO; one that adds more than addedOneByOne (a first start of a
// large folder) says so in one INFO line and names them at DEBUG.
func TestManyAddedFilesAreOneLogLine(t *testing.T) {
	empty, err := catalog.Load(os.DirFS(t.TempDir()), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3, addedOneByOne, addedOneByOne + 1, 200} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dir := t.TempDir()
			for i := 0; i < n; i++ {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.txt", i)), []byte{byte(i)}, 0o644)
			}
			next, err := catalog.Load(os.DirFS(dir), catalog.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var info, debug bytes.Buffer
			log := slog.New(slog.NewTextHandler(&info, nil))
			all := slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))
			if !diff(log, empty, next) || !diff(all, empty, next) {
				t.Fatal("adding files is no change")
			}
			lines := strings.Count(info.String(), "\n")
			named := strings.Count(debug.String(), `msg="catalog: added" path=`)
			if named != n {
				t.Errorf("%d files named at debug level, want %d", named, n)
			}
			switch {
			case n <= addedOneByOne && (lines != n || !strings.Contains(info.String(), "path=f000.txt")):
				t.Errorf("%d added: %d INFO lines, want one per file:\n%s", n, lines, info.String())
			case n > addedOneByOne && (lines != 1 || !strings.Contains(info.String(), fmt.Sprintf("count=%d bytes=%d first=f000.txt last=f%03d.txt", n, n, n-1))):
				t.Errorf("%d added: want one INFO line counting them, got %d:\n%s", n, lines, info.String())
			}
		})
	}
}

// TestWatchFollowsARelativeFolder: --catalog . (or any relative path)
// is watched as well as an absolute one: a file copied in is published
// from its change notification, well before the rescan (here an hour).
func TestWatchFollowsARelativeFolder(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	root, err := os.OpenRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	load := func(prev *catalog.Catalog, unstable map[string]bool, rehash bool) (*catalog.Catalog, error) {
		return catalog.Load(root.FS(), catalog.Options{Previous: prev, Unstable: unstable, Rehash: rehash})
	}
	first, _ := load(nil, nil, false)
	pub := &published{cats: []*catalog.Catalog{first}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, Config{Dir: ".", Load: load, Publish: pub.add, Settle: 200 * time.Millisecond, Rescan: time.Hour}, first)
	time.Sleep(time.Second) // the watch's first look is over
	b := image(t, 9)
	os.WriteFile(filepath.Join(dir, "new.bin"), b, 0o644)
	eventually(t, "new.bin published from its notification", func() bool {
		e, ok := pub.last().File("new.bin")
		return ok && e.MD5 == md5hex(b)
	})
}
