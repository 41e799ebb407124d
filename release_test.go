package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"otabox/appliance/emu"
)

// TestRelease builds the release twice and checks the archives are
// identical, complete, and that the ARM binaries really serve devices
// (under qemu-user, which .ci/run installs).
func TestRelease(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make")
	}
	dist1, dist2 := t.TempDir(), t.TempDir()
	for _, d := range []string{dist1, dist2} {
		out, err := exec.Command("make", "release", "DIST="+d, "VERSION=test").CombinedOutput()
		if err != nil {
			t.Fatalf("make release: %v\n%s", err, out)
		}
	}
	sums1, _ := os.ReadFile(filepath.Join(dist1, "SHA256SUMS"))
	sums2, _ := os.ReadFile(filepath.Join(dist2, "SHA256SUMS"))
	if len(sums1) == 0 || string(sums1) != string(sums2) {
		t.Fatalf("two builds differ:\n%s\n%s", sums1, sums2)
	}
	for _, arch := range []string{"amd64", "arm64", "armv7", "armv6"} {
		if !strings.Contains(string(sums1), "otabox_test_linux_"+arch+".tar.gz") {
			t.Errorf("no %s archive in SHA256SUMS:\n%s", arch, sums1)
		}
	}
	for _, tc := range []struct {
		arch string
		qemu []string
	}{
		{"arm64", []string{"qemu-aarch64-static"}},
		{"armv7", []string{"qemu-arm-static"}},
		// The Pi 1 / Zero core: qemu's default CPU runs ARMv7 instructions,
		// which would hide one slipped into an armv6 build.
		{"armv6", []string{"qemu-arm-static", "-cpu", "arm1176"}},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			dir := t.TempDir()
			files := untar(t, filepath.Join(dist1, "otabox_test_linux_"+tc.arch+".tar.gz"), dir)
			want := []string{"LICENSE", "README.md", "otabox", "otabox.service"}
			if strings.Join(files, " ") != strings.Join(want, " ") {
				t.Errorf("archive holds %v, want %v", files, want)
			}
			qemu, err := exec.LookPath(tc.qemu[0])
			if err != nil {
				skipOrFail(t, tc.qemu[0]+" not installed (apt-get install qemu-user-static)")
			}
			bin := append(append([]string{qemu}, tc.qemu[1:]...), filepath.Join(dir, "otabox"))
			data := t.TempDir()
			r := startCmd(t, bin, "--data-dir", data)
			d := emu.New(emu.ESP32v20)
			if list := d.Catalog(r.addr, "."); len(list.Firmwares) != 1 || list.Firmwares[0].Name != "blink-esp32.bin" {
				t.Fatalf("catalog from the %s build: %+v", tc.arch, list)
			}
			res := d.Update(r.addr, "/blink-esp32.bin")
			file, _ := firmware.ReadFile("firmware/blink-esp32.bin")
			sum := md5.Sum(file)
			if res.Outcome != emu.OK || res.MD5 != hex.EncodeToString(sum[:]) {
				t.Fatalf("download from the %s build: %v md5 %s", tc.arch, res, res.MD5)
			}
			// The store (modernc.org/sqlite, pure Go) on this architecture:
			// the download is recorded, and read back by the same binary.
			r.cmd.Process.Signal(os.Interrupt)
			r.cmd.Wait()
			out, err := exec.Command(bin[0], append(bin[1:], "devices", "--json", "--data-dir", data)...).Output()
			if err != nil || !strings.Contains(string(out), `"mac": "24:0A:C4:12:34:56"`) || !strings.Contains(string(out), `"state": "sent"`) {
				t.Fatalf("the %s build's store: %v\n%s", tc.arch, err, out)
			}
			t.Logf("%s build under %s served %d bytes, MD5 %s, and recorded it in its store", tc.arch, strings.Join(tc.qemu, " "), len(res.Image), res.MD5)
		})
	}
}

// untar extracts an archive's regular files into dir and returns their names.
func untar(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Base(h.Name)
		out, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
