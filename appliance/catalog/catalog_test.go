package catalog_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"otabox/appliance/catalog"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

func img(t *testing.T, s imagegen.Spec) []byte {
	t.Helper()
	b, err := imagegen.Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClean(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{".", "", ""}, {"", "", ""}, {"/", "", ""}, {"sub", "sub", ""}, {"/sub", "sub", ""}, {"sub/", "sub", ""},
		{"./sub", "sub", ""}, {"sub//x.bin", "sub/x.bin", ""}, {"/./x.bin", "x.bin", ""},
		{"..", "", `".."`}, {"sub/../../x", "", `".."`}, {`sub\x`, "", "backslash"}, {"a\x00b", "", "NUL"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := catalog.Clean(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Clean(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Clean(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{".", "/sub/", "a/../b", "./x.bin", "%2e%2e", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := catalog.Clean(p)
		if err != nil {
			return
		}
		for _, el := range strings.Split(got, "/") {
			if el == ".." || el == "." || (el == "" && got != "") {
				t.Fatalf("Clean(%q) = %q", p, got)
			}
		}
		if again, _ := catalog.Clean(got); again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", p, got, again)
		}
	})
}

// TestLoadSkipsWhatDevicesCannotUse: malformed images, unsafe names and
// over-budget names are left out with a warning; the rest loads.
func TestLoadSkipsWhatDevicesCannotUse(t *testing.T) {
	good := img(t, imagegen.Spec{Family: espimage.ESP8266, Size: 8 << 10})
	fsys := fstest.MapFS{
		"good.bin":                        {Data: good},
		"truncated.bin":                   {Data: good[:5000]},
		"zero.bin":                        {Data: []byte{0xE9}},
		"readme.txt":                      {Data: []byte("hi")},
		"with space.bin":                  {Data: good},
		strings.Repeat("n", 125) + ".bin": {Data: good}, // 129 bytes
		".hidden.bin":                     {Data: good},
		"bad dir/x.bin":                   {Data: good},
	}
	var logs bytes.Buffer
	cat, err := catalog.Load(fsys, catalog.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range cat.Files() {
		got = append(got, e.Path+":"+string(e.Type))
	}
	if strings.Join(got, " ") != "good.bin:bin readme.txt:file" {
		t.Errorf("catalog %v", got)
	}
	for _, want := range []string{"truncated.bin", "zero.bin", "with space.bin", "JSON buffer", "bad dir"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning about %q in:\n%s", want, logs.String())
		}
	}
}

func TestPerFamilyJSON(t *testing.T) {
	fsys := fstest.MapFS{
		"a.bin": {Data: img(t, imagegen.Spec{Family: espimage.ESP8266, Size: 8 << 10})},
		"b.bin": {Data: img(t, imagegen.Spec{Family: espimage.ESP32, Size: 8 << 10, Date: "Jan  2 2026", Time: "03:04:05"})},
		"sub":   {Mode: os.ModeDir},
	}
	cat, err := catalog.Load(fsys, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cat.Dir("")
	for fam, want := range map[espimage.Family][]string{
		espimage.FamilyUnknown: {`{"name":"a.bin","type":"bin"`, `{"name":"b.bin","type":"bin","date":"01/02/26","time":"03:04:05"`, `{"name":"sub","type":"directory"}`},
		espimage.ESP8266:       {`{"name":"a.bin","type":"bin"`, `{"name":"b.bin","type":"file"}`},
		espimage.ESP32:         {`{"name":"a.bin","type":"file"}`, `{"name":"b.bin","type":"bin"`},
	} {
		js := string(root.JSON(fam))
		for _, w := range want {
			if !strings.Contains(js, w) {
				t.Errorf("%v: %s lacks %s", fam, js, w)
			}
		}
	}
	sub, _ := cat.Dir("sub")
	if got := string(sub.JSON(espimage.ESP32)); got != `[{"name":".","type":"directory"}]` {
		t.Errorf("empty folder lists %s", got)
	}
}

// TestDiskSymlinks: a symlink inside a disk catalog may point within it,
// never outside.
func TestDiskSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	fw := img(t, imagegen.Spec{Family: espimage.ESP32, Size: 8 << 10})
	os.WriteFile(filepath.Join(root, "real.bin"), fw, 0o644)
	os.WriteFile(filepath.Join(outside, "secret.bin"), fw, 0o644)
	os.Symlink("real.bin", filepath.Join(root, "alias.bin"))
	os.Symlink(filepath.Join(outside, "secret.bin"), filepath.Join(root, "escape.bin"))
	os.Symlink("../"+filepath.Base(outside)+"/secret.bin", filepath.Join(root, "relescape.bin"))
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(r.FS(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range cat.Files() {
		got = append(got, e.Name)
	}
	if strings.Join(got, " ") != "alias.bin real.bin" {
		t.Errorf("catalog %v", got)
	}
	e, _ := cat.File("real.bin")
	b, _ := io.ReadAll(e.Content())
	if !bytes.Equal(b, fw) {
		t.Error("content differs")
	}
}

// TestManifest: an embedded catalog with a manifest takes each file's
// description from it without reading the file, and Verify finds files
// that changed after the manifest was made.
func TestManifest(t *testing.T) {
	fw := img(t, imagegen.Spec{Family: espimage.ESP32, Size: 8 << 10, Version: "1"})
	fsys := fstest.MapFS{"a.bin": {Data: fw}, "b.bin": {Data: fw}, "bad.bin": {Data: fw[:40]}}
	m, err := catalog.NewManifest(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Skipped["bad.bin"]; !ok || len(m.Files) != 2 {
		t.Fatalf("manifest %+v", m)
	}
	b, _ := m.MarshalIndent()
	m2, err := catalog.ParseManifest(b, m.GzipBlob())
	if err != nil || !m.Equal(m2) || m2.Files["a.bin"].Image.Version != "1" {
		t.Fatalf("round trip: %v", err)
	}
	// Same size, other bytes: the manifest is believed at load, and Verify
	// catches it.
	changed := bytes.Clone(fw)
	changed[100] ^= 1
	fsys["b.bin"] = &fstest.MapFile{Data: changed}
	cat, err := catalog.Load(fsys, catalog.Options{Embedded: true, Manifest: m2})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := cat.File("b.bin"); e == nil || e.MD5 != m2.Files["b.bin"].MD5 {
		t.Fatal("b.bin not taken from the manifest")
	}
	if stale := cat.Verify(fsys, m2); strings.Join(stale, ",") != "b.bin" {
		t.Errorf("Verify = %v", stale)
	}
	e, _ := cat.File("a.bin")
	got, _ := io.ReadAll(e.Content())
	if !bytes.Equal(got, fw) {
		t.Error("content from the manifest path differs")
	}
}

// TestUnknownESP32ChipLeftOut: an ESP32 image whose chip id otabox cannot
// name is left out with a warning, never listed or served.
func TestUnknownESP32ChipLeftOut(t *testing.T) {
	img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Chip: espimage.Chip(0x7777), Size: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(fstest.MapFS{"odd.bin": {Data: img}}, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cat.File("odd.bin"); ok {
		t.Fatal("listed")
	}
	if why := cat.Skipped()["odd.bin"]; !strings.Contains(why, "chip id 30583, which otabox does not know") {
		t.Errorf("reason %q", why)
	}
}

// TestGzipNeverCompressesSignedImages: --gzip '*' keeps a compressed copy
// of an unsigned ESP8266 image but not of a signed one, whose signature
// covers the bytes as signed.
func TestGzipNeverCompressesSignedImages(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fw, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10})
	signed, err := imagegen.SignESP8266(fw, key, false)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(fstest.MapFS{"plain.bin": {Data: fw}, "signed.bin": {Data: signed}}, catalog.Options{Gzip: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := cat.File("plain.bin")
	sig, _ := cat.File("signed.bin")
	if plain == nil || sig == nil || plain.Gzip == nil || sig.Gzip != nil || sig.Image.Signature == nil {
		t.Fatalf("plain %+v, signed %+v", plain, sig)
	}
}

// TestGzipCompressedAtBuildTime: the manifest carries every unsigned
// ESP8266 image compressed (not ESP32 ones), and a load from it serves
// --gzip from the embedded blob in place: no compression at start-up. A
// blob too short for the manifest is not used (the image is compressed at
// load), and one whose bytes differ (another build's) is found by Verify,
// which the server runs in the background after start-up.
func TestGzipCompressedAtBuildTime(t *testing.T) {
	esp := img(t, imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10})
	fsys := fstest.MapFS{"a.bin": {Data: esp}, "b.bin": {Data: img(t, imagegen.Spec{Family: espimage.ESP32, Size: 32 << 10})}}
	m, err := catalog.NewManifest(fsys)
	if err != nil {
		t.Fatal(err)
	}
	blob := m.GzipBlob()
	if m.Files["a.bin"].Gzip == nil || m.Files["b.bin"].Gzip != nil || int64(len(blob)) != m.Files["a.bin"].Gzip.Size {
		t.Fatalf("manifest gzip: a %+v, b %+v, blob %d bytes", m.Files["a.bin"].Gzip, m.Files["b.bin"].Gzip, len(blob))
	}
	desc, _ := m.MarshalIndent()
	all := func(string) bool { return true }
	for _, tc := range []struct {
		name    string
		blob    []byte
		gzip    func(string) bool
		inPlace bool
	}{
		{"from the blob", blob, all, true},
		{"--gzip off", blob, nil, false},
		{"a blob shorter than the manifest says", blob[:len(blob)/2], all, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mm, err := catalog.ParseManifest(desc, tc.blob)
			if err != nil {
				t.Fatal(err)
			}
			cat, err := catalog.Load(fsys, catalog.Options{Embedded: true, Manifest: mm, Gzip: tc.gzip})
			if err != nil {
				t.Fatal(err)
			}
			e, _ := cat.File("a.bin")
			if tc.gzip == nil {
				if e.Gzip != nil {
					t.Fatal("compressed form served with --gzip off")
				}
				return
			}
			gz := e.Gzip.Bytes()
			if inPlace := len(gz) > 0 && &gz[0] == &tc.blob[0]; inPlace != tc.inPlace {
				t.Fatalf("served from the embedded blob: %v, want %v", inPlace, tc.inPlace)
			}
			if got, err := imagegen.Gunzip(gz); err != nil || !bytes.Equal(got, esp) {
				t.Fatal("the compressed form does not inflate to the image")
			}
			if stale := cat.Verify(fsys, mm); len(stale) != 0 {
				t.Errorf("Verify = %v", stale)
			}
		})
	}
	other := bytes.Clone(blob)
	other[len(other)/2] ^= 1
	mm, _ := catalog.ParseManifest(desc, other)
	cat, err := catalog.Load(fsys, catalog.Options{Embedded: true, Manifest: mm, Gzip: all})
	if err != nil {
		t.Fatal(err)
	}
	if stale := cat.Verify(fsys, mm); strings.Join(stale, ",") != "a.bin" {
		t.Errorf("a blob of another build: Verify = %v", stale)
	}
}
