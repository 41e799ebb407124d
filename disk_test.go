package main

// Disk catalogs at field scale (issue 14): images stay on disk, pinned;
// the fleet record remembers their digests across restarts.

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// slowDownload is one device download held open: the head and the first
// bytes read, the rest waiting in a deliberately small receive buffer.
type slowDownload struct {
	conn   net.Conn
	resp   *http.Response
	r      *bufio.Reader
	first  []byte
	xmd5   string
	length int64
}

func startSlowDownload(t *testing.T, addr string, mac string) *slowDownload {
	t.Helper()
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8192)
		})
	}}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.FreeSpace, d.ChipSize = mac, 8<<20, 8<<20
	conn.Write(d.UpdateRequest(addr, "/fw.bin"))
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download %s: %v %v", mac, resp, err)
	}
	first := make([]byte, 16<<10)
	if _, err := io.ReadFull(br, first); err != nil {
		t.Fatal(err)
	}
	return &slowDownload{conn, resp, br, first, resp.Header.Get("x-MD5"), resp.ContentLength}
}

// finish reads the rest; a download cut off ends short.
func (s *slowDownload) finish() []byte {
	defer s.conn.Close()
	s.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	rest, _ := io.ReadAll(io.LimitReader(s.r, s.length-int64(len(s.first))))
	return append(s.first, rest...)
}

// TestDownloadsKeepTheirBytes: 20 downloads of a 6 MB image are running
// when the file is replaced by a rename, deleted, or rewritten in place.
// With the fleet record, every one completes with the bytes and the x-MD5
// it started with, whatever the change: they are sent from otabox's own
// copy in the data dir. Without it (--data-dir ""), the entry pins the
// file: after a rename or a removal every one completes; after a rewrite
// in place none completes with bytes other than those of its x-MD5 (a
// download sees the change and is cut off, or had already read the
// original whole).
func TestDownloadsKeepTheirBytes(t *testing.T) {
	build := func(seed uint64) []byte {
		b, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 6 << 20, FlashSize: 8 << 20, Seed: seed}) // more than a socket holds (4 MB)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	old, other := build(71), build(72)
	if len(old) != len(other) {
		t.Fatalf("sizes %d, %d", len(old), len(other))
	}
	sum := md5.Sum(old)
	oldMD5 := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		change string
		record bool
	}{
		{"replaced by rename", true}, {"deleted", true}, {"rewritten in place", true},
		{"replaced by rename", false}, {"deleted", false}, {"rewritten in place", false},
	} {
		change := tc.change
		name := change + ", copy in the data dir"
		args := []string{"--max-conns-per-ip", "32"} // 20 downloads from one test address
		if !tc.record {
			name, args = change+", no data dir", append(args, "--data-dir", "")
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			fw := filepath.Join(dir, "fw.bin")
			os.WriteFile(fw, old, 0o644)
			r := start(t, append([]string{"--catalog", dir}, args...)...)
			if tc.record {
				// The copy is used once it is durable (a moment after the
				// file is first read; until then the file itself serves).
				waitLog(t, r, `msg="catalog: copies kept" files=1`)
			}
			var dls []*slowDownload
			for i := 0; i < 20; i++ {
				dls = append(dls, startSlowDownload(t, r.addr, macN("5C:CF:7F", 0x140000+i)))
			}
			switch change {
			case "replaced by rename":
				tmp := filepath.Join(dir, ".fw.tmp")
				os.WriteFile(tmp, other, 0o644)
				os.Rename(tmp, fw)
			case "deleted":
				os.Remove(fw)
			case "rewritten in place":
				f, err := os.OpenFile(fw, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(other, 0)
				f.Close()
			}
			complete, cut := 0, 0
			for i, dl := range dls {
				body := dl.finish()
				sum := md5.Sum(body)
				got := hex.EncodeToString(sum[:])
				switch {
				case dl.xmd5 != oldMD5:
					t.Errorf("download %d was announced x-MD5 %s, want %s", i, dl.xmd5, oldMD5)
				case int64(len(body)) == dl.length && got == dl.xmd5:
					complete++
				case int64(len(body)) == dl.length:
					t.Errorf("download %d completed with bytes of MD5 %s under x-MD5 %s", i, got, dl.xmd5)
				default:
					cut++
				}
			}
			t.Logf("%s: %d of 20 completed with their announced bytes, %d cut off", name, complete, cut)
			if (tc.record || change != "rewritten in place") && complete != 20 {
				t.Errorf("%d of 20 completed; a %s file must not touch running downloads", complete, change)
			}
			if cut > 0 {
				// A download that had not read the file before the change
				// is cut off, and the log says why.
				waitLog(t, r, "was modified on disk during the download")
			}
		})
	}
}

// TestRestartListsWithoutRehashing: a 200-file disk catalog, once hashed,
// is published after a restart from the fleet record: the log says no
// file was read, and the catalog lists every file with the same digests.
func TestRestartListsWithoutRehashing(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	for i := 0; i < 200; i++ {
		b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 16 << 10, Seed: uint64(1000 + i)})
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("fw%03d.bin", i)), b, 0o644)
	}
	first := startData(t, data, "--catalog", dir)
	waitLog(t, first, "read=200 from_record=0")
	want := getBody(t, "http://"+first.addr+"/api/catalog")
	first.cmd.Process.Signal(syscall.SIGTERM)
	first.cmd.Wait()

	second := startData(t, data, "--catalog", dir)
	line := waitLog(t, second, "catalog loaded")
	if !strings.Contains(line, "read=0 from_record=200") {
		t.Errorf("restart: %s", line)
	}
	if got := getBody(t, "http://"+second.addr+"/api/catalog"); got != want {
		t.Errorf("the catalog after the restart differs:\n%s\nwant\n%s", got, want)
	}
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(second.addr, "/fw123.bin"); res.Outcome != emu.OK {
		t.Errorf("a file published from the record: %v", res)
	}
}

// TestDataDirKeepsOneCopyPerServedFile: the data dir holds a copy of each
// served disk file, named for its SHA-256 (what downloads are sent from);
// a restart finds them and copies nothing; a file that leaves the folder,
// or is replaced, has its old copy deleted.
func TestDataDirKeepsOneCopyPerServedFile(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	images := map[string][]byte{}
	for i := 0; i < 3; i++ {
		b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Seed: uint64(60 + i)})
		images[fmt.Sprintf("fw%d.bin", i)] = b
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("fw%d.bin", i)), b, 0o644)
	}
	// copies returns the data dir's copies by name, checking each holds
	// the bytes its name says.
	copies := func() map[string]bool {
		t.Helper()
		m, _ := filepath.Glob(filepath.Join(data, "images", "*"))
		got := map[string]bool{}
		for _, p := range m {
			if strings.HasPrefix(filepath.Base(p), ".tmp-") {
				continue // a copy being written, renamed to its SHA-256 once whole (none is left: below)
			}
			b, _ := os.ReadFile(p)
			sum := sha256.Sum256(b)
			if name := filepath.Base(p); name != hex.EncodeToString(sum[:])+".bin" {
				t.Errorf("copy %s holds bytes of SHA-256 %x", name, sum)
			}
			got[filepath.Base(p)] = true
		}
		return got
	}
	want := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			sum := sha256.Sum256(images[n])
			m[hex.EncodeToString(sum[:])+".bin"] = true
		}
		return m
	}
	first := startData(t, data, "--catalog", dir)
	waitLog(t, first, "read=3 from_record=0")
	waitLog(t, first, `msg="catalog: copies kept" files=3`)
	if got := copies(); !maps.Equal(got, want("fw0.bin", "fw1.bin", "fw2.bin")) {
		t.Fatalf("first start: copies %v", got)
	}
	first.cmd.Process.Signal(syscall.SIGTERM)
	first.cmd.Wait()

	second := startData(t, data, "--catalog", dir)
	waitLog(t, second, "read=0 from_record=3")
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(second.addr, "/fw1.bin"); res.Outcome != emu.OK || !bytes.Equal(res.Image, images["fw1.bin"]) {
		t.Fatalf("download from a copy after the restart: %v", res)
	}
	os.Remove(filepath.Join(dir, "fw0.bin"))
	b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Seed: 70})
	images["fw2.bin"] = b
	os.WriteFile(filepath.Join(dir, ".fw2.tmp"), b, 0o644)
	os.Rename(filepath.Join(dir, ".fw2.tmp"), filepath.Join(dir, "fw2.bin"))
	deadline := time.Now().Add(15 * time.Second)
	for !maps.Equal(copies(), want("fw1.bin", "fw2.bin")) {
		if time.Now().After(deadline) {
			t.Fatalf("after fw0.bin left and fw2.bin was replaced: copies %v, want %v", copies(), want("fw1.bin", "fw2.bin"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitLog(t, second, "deleted the copies of files that left the catalog")
	if tmp, _ := filepath.Glob(filepath.Join(data, "images", ".tmp-*")); len(tmp) > 0 {
		t.Errorf("copies left half-written: %v", tmp)
	}
}

// TestGzipCompressedOnceAndKept: --gzip on a disk catalog compresses each
// ESP8266 image once; the compressed form is kept in the data dir, so a
// restart serves the same bytes without compressing again, and the kept
// copy of an image that leaves the folder is deleted.
func TestGzipCompressedOnceAndKept(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	images := map[string][]byte{}
	for i, fam := range []espimage.Family{espimage.ESP8266, espimage.ESP8266, espimage.ESP32} {
		b, _ := imagegen.Build(imagegen.Spec{Family: fam, Size: 64 << 10, Seed: uint64(40 + i)})
		name := fmt.Sprintf("fw%d.bin", i)
		images[name] = b
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	kept := func() int {
		m, _ := filepath.Glob(filepath.Join(data, "gzip", "*.gz"))
		return len(m)
	}
	// update has a core 3.1 device list the catalog (so otabox knows it
	// inflates) and download fw0.bin: the compressed file, whole.
	update := func(r *running) emu.UpdateResult {
		t.Helper()
		d := emu.New(emu.ESP8266v31)
		if res := d.Catalog(r.addr, "."); res.Err != "" {
			t.Fatal(res.Err)
		}
		res := d.Update(r.addr, "/fw0.bin")
		if res.Outcome != emu.OK || res.Image[0] != 0x1f {
			t.Fatalf("update: %v, first byte %#x", res, res.Image[0])
		}
		if got, err := imagegen.Gunzip(res.Image); err != nil || !bytes.Equal(got, images["fw0.bin"]) {
			t.Fatal("the compressed download does not inflate to fw0.bin")
		}
		return res
	}

	first := startData(t, data, "--catalog", dir, "--gzip", "*")
	waitLog(t, first, "catalog loaded")
	if n := strings.Count(first.log.all.String(), "compressed for --gzip"); n != 2 || kept() != 2 {
		t.Fatalf("first start: %d images compressed, %d kept; want 2 and 2", n, kept())
	}
	want := update(first)
	first.cmd.Process.Signal(syscall.SIGTERM)
	first.cmd.Wait()

	second := startData(t, data, "--catalog", dir, "--gzip", "*")
	waitLog(t, second, "catalog loaded")
	if strings.Contains(second.log.all.String(), "compressed for --gzip") {
		t.Errorf("the restart compressed again:\n%s", second.log.all.String())
	}
	if got := update(second); got.MD5 != want.MD5 || !bytes.Equal(got.Image, want.Image) {
		t.Errorf("after the restart: x-MD5 %s, want %s", got.MD5, want.MD5)
	}
	os.Remove(filepath.Join(dir, "fw1.bin"))
	waitLog(t, second, "deleted the compressed images of files that left the catalog")
	if kept() != 1 {
		t.Errorf("%d compressed images kept after fw1.bin left, want 1", kept())
	}
}

// TestEmbeddedGzipCompressedAtBuildTime: the embedded firmware's ESP8266
// images were compressed by the build (firmware.gzip, beside the
// manifest): otabox --gzip starts without compressing anything and
// serves a core 2.7+ device those bytes.
func TestEmbeddedGzipCompressedAtBuildTime(t *testing.T) {
	r := start(t, "--gzip", "*")
	waitLog(t, r, "catalog loaded")
	if strings.Contains(r.log.all.String(), "compressed for --gzip") {
		t.Fatalf("start-up compressed an embedded image:\n%s", r.log.all.String())
	}
	raw, err := os.ReadFile("firmware/blink-esp8266.bin")
	if err != nil {
		t.Fatal(err)
	}
	d := emu.New(emu.ESP8266v31)
	if res := d.Catalog(r.addr, "."); res.Err != "" {
		t.Fatal(res.Err)
	}
	res := d.Update(r.addr, "/blink-esp8266.bin")
	got, err := imagegen.Gunzip(res.Image)
	if res.Outcome != emu.OK || len(res.Image) >= len(raw) || err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("update: %v, %d of %d bytes, inflated: %v", res, len(res.Image), len(raw), err)
	}
	sum := md5.Sum(res.Image)
	if res.MD5 != hex.EncodeToString(sum[:]) {
		t.Errorf("x-MD5 %s is not the compressed bytes' %x", res.MD5, sum)
	}
}

// TestFilesCopiedJustBeforeStartAreReadOnceSettled: files copied onto the
// box just before otabox starts, more than start-up reads, are read once
// they have stopped changing; until then they are pending (503), and the
// wait is quiet: no stream of "still being written" lines (the read
// rounds went round without pause and logged 24,656 of them in 4 s).
func TestFilesCopiedJustBeforeStartAreReadOnceSettled(t *testing.T) {
	dir := t.TempDir()
	for i := 1; i <= 5; i++ {
		img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 6 << 20, FlashSize: 16 << 20, Seed: uint64(60 + i)})
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("fresh%d.bin", i)), img, 0o644)
	}
	r := start(t, "--catalog", dir)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if list := emu.New(emu.ESP8266v31).Catalog(r.addr, "."); len(list.Firmwares) == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the five files were never all listed")
		}
	}
	time.Sleep(2 * time.Second) // the rounds after the last file was read
	r.cmd.Process.Signal(syscall.SIGTERM)
	waitLog(t, r, "store closed")
	if n := strings.Count(r.log.all.String(), "still being written"); n > 5 {
		t.Errorf("%d \"still being written\" lines for 5 files copied before the start:\n%.2000s", n, r.log.all.String())
	}
}

// listed is the names an ESP8266 sees at the catalog's top.
func listed(addr string) string {
	var names []string
	for _, fw := range emu.New(emu.ESP8266v31).Catalog(addr, ".").Firmwares {
		names = append(names, fw.Name)
	}
	return strings.Join(names, " ")
}

// waitListed waits until the top of the catalog lists exactly want.
func waitListed(t *testing.T, addr, want string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); listed(addr) != want; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("listed %q, want %q", listed(addr), want)
		}
	}
}

func writeImage(t *testing.T, path string, seed uint64) []byte {
	t.Helper()
	img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestCatalogReleaseSwitchIsFollowed: --catalog names a symlink
// (current -> release1); `ln -sfn release2 current` is followed without a
// signal: release2 is read whole and served, and the log says so with
// both releases' file counts. A device then downloads release2's bytes.
func TestCatalogReleaseSwitchIsFollowed(t *testing.T) {
	base := t.TempDir()
	for _, rel := range []string{"release1", "release2"} {
		os.Mkdir(filepath.Join(base, rel), 0o755)
	}
	writeImage(t, filepath.Join(base, "release1", "app-1.bin"), 81)
	want := writeImage(t, filepath.Join(base, "release2", "app-2.bin"), 82)
	writeImage(t, filepath.Join(base, "release2", "tool-2.bin"), 83)
	current := filepath.Join(base, "current")
	os.Symlink("release1", current)
	r := start(t, "--catalog", current)
	waitListed(t, r.addr, "app-1.bin")
	// ln -sfn: a new link renamed over the old one.
	os.Symlink("release2", current+".new")
	os.Rename(current+".new", current)
	waitListed(t, r.addr, "app-2.bin tool-2.bin")
	line := waitLog(t, r, "catalog: the folder was replaced")
	for _, s := range []string{"was=" + filepath.Join(base, "release1"), "was_files=1", "now=" + filepath.Join(base, "release2"), "files=2"} {
		if !strings.Contains(line, s) {
			t.Errorf("log line lacks %q: %s", s, line)
		}
	}
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(r.addr, "/app-2.bin"); res.Outcome != emu.OK || !bytes.Equal(d.Running, want) {
		t.Fatalf("release2's image: %v", res)
	}
}

// TestCatalogFolderMadeAgainIsFollowed: the --catalog folder deleted
// (rm -rf) keeps the last catalog served, says so in one ERROR (not one
// per rescan) and on the status page; made again with other files, it is
// read and served, and the banner goes.
func TestCatalogFolderMadeAgainIsFollowed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "firmware")
	os.Mkdir(dir, 0o755)
	writeImage(t, filepath.Join(dir, "old.bin"), 84)
	r := start(t, "--catalog", dir)
	waitListed(t, r.addr, "old.bin")
	os.RemoveAll(dir)
	waitLog(t, r, "catalog: the folder is gone; still serving the last catalog")
	if got := listed(r.addr); got != "old.bin" {
		t.Fatalf("with the folder gone, listed %q", got)
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, "Catalog folder gone") {
		t.Error("the status page shows no banner for the folder gone")
	}
	r.cmd.Process.Signal(syscall.SIGHUP) // a reload while it is gone: no second ERROR within the minute
	time.Sleep(2500 * time.Millisecond)
	os.Mkdir(dir, 0o755)
	want := writeImage(t, filepath.Join(dir, "new.bin"), 85)
	waitListed(t, r.addr, "new.bin")
	waitLog(t, r, "catalog: the folder is back")
	if n := strings.Count(r.log.all.String(), "the folder is gone"); n != 1 {
		t.Errorf("%d ERROR lines for one folder gone, want 1", n)
	}
	if page := getBody(t, "http://"+r.addr+"/"); strings.Contains(page, "Catalog folder gone") {
		t.Error("the banner stays once the folder is back")
	}
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(r.addr, "/new.bin"); res.Outcome != emu.OK || !bytes.Equal(d.Running, want) {
		t.Fatalf("the new folder's image: %v", res)
	}
}
