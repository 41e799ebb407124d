package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// TestRelease builds the release twice and checks the archives are
// identical, complete, and that the ARM binaries really serve devices
// (under qemu-user, which .ci/run installs).
func TestRelease(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		skipOrFail(t, "needs make")
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
	for _, arch := range []string{"amd64", "arm64", "armhf", "armel"} {
		if !strings.Contains(string(sums1), "otabox_test_"+arch+".deb") {
			t.Errorf("no %s package in SHA256SUMS:\n%s", arch, sums1)
		}
	}
	t.Run("deb", func(t *testing.T) { debInstallsRemovesAndPurges(t, filepath.Join(dist1, "otabox_test_amd64.deb")) })
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
			data, cat := t.TempDir(), t.TempDir()
			sample, _ := firmware.ReadFile("firmware/blink-esp32.bin")
			os.WriteFile(filepath.Join(cat, "blink-esp32.bin"), sample, 0o644)
			r := startCmd(t, bin, "--data-dir", data, "--catalog", cat)
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

// debInstallsRemovesAndPurges installs the amd64 package on this machine
// (CI runs as root on a throwaway one), as a Pi user would with
// `sudo apt install ./otabox_…_arm64.deb`: the binary runs, the system
// user and its state folder with a group-writable firmware/ exist, the
// unit and its drop-in verify (systemd-analyze) and the service is
// enabled, not started; remove keeps the record, purge takes the folder
// and the user too.
func debInstallsRemovesAndPurges(t *testing.T, deb string) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil || os.Geteuid() != 0 {
		skipOrFail(t, "installing the package needs dpkg and root (CI has both)")
	}
	if _, err := os.Stat("/var/lib/dpkg/info/otabox.list"); err == nil {
		t.Skip("SKIP: an otabox package is installed on this machine; the test does not touch it")
	}
	sh := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command(dpkg, "--purge", "otabox").Run() })
	out := sh(dpkg, "-i", deb)
	if !strings.Contains(out, "copy firmware into /var/lib/otabox/firmware") {
		t.Errorf("the install does not say what to do next:\n%s", out)
	}
	if v := sh("/usr/bin/otabox", "version"); !strings.Contains(v, "otabox version test, built") {
		t.Errorf("installed binary: %s", v)
	}
	sh("getent", "passwd", "otabox")
	if st, err := os.Stat("/var/lib/otabox/firmware"); err != nil || st.Mode().Perm() != 0o775 || st.Mode()&os.ModeSetgid == 0 {
		t.Errorf("/var/lib/otabox/firmware: %v %v", st, err)
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(analyze, "verify", "/lib/systemd/system/otabox.service").CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	if _, err := os.Lstat("/etc/systemd/system/multi-user.target.wants/otabox.service"); err != nil {
		t.Errorf("the service is not enabled: %v", err)
	}
	packagePageTakesAnUpload(t, out)
	os.WriteFile("/var/lib/otabox/otabox.db", []byte("the record"), 0o644)
	sh(dpkg, "-r", "otabox")
	if _, err := os.Stat("/usr/bin/otabox"); err == nil {
		t.Error("remove left /usr/bin/otabox")
	}
	if _, err := os.Stat("/var/lib/otabox/otabox.db"); err != nil {
		t.Errorf("remove took the fleet record: %v", err)
	}
	sh(dpkg, "--purge", "otabox")
	if _, err := os.Stat("/var/lib/otabox"); err == nil {
		t.Error("purge left /var/lib/otabox")
	}
	if err := exec.Command("getent", "passwd", "otabox").Run(); err == nil {
		t.Error("purge left the otabox user")
	}
	if _, err := os.Stat("/etc/otabox/admin-password"); err == nil {
		t.Error("purge left the page's password")
	}
}

// packagePageTakesAnUpload: the install made the status page's password
// (root:otabox 0640) and said it; the installed binary, run as the unit
// runs it (user otabox, its state folder, the drop-in's password file),
// keeps the page behind it and takes an image uploaded from the page into
// /var/lib/otabox/firmware, which a device then downloads: a new box to a
// flashed device without a shell after the install.
func packagePageTakesAnUpload(t *testing.T, install string) {
	const pwFile = "/etc/otabox/admin-password"
	b, err := os.ReadFile(pwFile)
	password := strings.TrimSpace(string(b))
	st, serr := os.Stat(pwFile)
	if err != nil || serr != nil || len(password) < 16 || st.Mode().Perm() != 0o640 {
		t.Fatalf("%s: %q %v %v", pwFile, password, st, err)
	}
	if grp, err := exec.Command("stat", "-c", "%U:%G", pwFile).Output(); err != nil || strings.TrimSpace(string(grp)) != "root:otabox" {
		t.Errorf("%s is owned by %s (%v), not root:otabox", pwFile, grp, err)
	}
	if !strings.Contains(install, "the status page's password (any user name) is "+password) {
		t.Errorf("the install does not say the page's password:\n%s", install)
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		skipOrFail(t, "running the binary as user otabox needs setpriv (util-linux)")
	}
	cmd := exec.Command(setpriv, "--reuid=otabox", "--regid=otabox", "--init-groups", "/usr/bin/otabox", "serve", "--bind", "127.0.0.1", "--port", "0", "--mdns=false")
	cmd.Dir = "/var/lib/otabox"
	cmd.Env = append(os.Environ(), "STATE_DIRECTORY=/var/lib/otabox", "OTABOX_ADMIN_PASSWORD_FILE="+pwFile)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr := ""
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := regexp.MustCompile(`msg=serving addr=(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatal("the installed binary did not start serving")
	}
	go io.Copy(io.Discard, stderr)
	if resp, err := http.Get("http://" + addr + "/"); err != nil || resp.StatusCode != 401 {
		t.Errorf("the page without the password: %v %v", resp, err)
	}
	img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 80 << 10, Project: "meter", Version: "4.0.0", Seed: 41})
	if err != nil {
		t.Fatal(err)
	}
	if code, line := do(t, uploadForm(t, addr, password, pageToken(t, addr, password), "meter-4.0.0.bin", img)); code != 201 {
		t.Fatalf("upload to the installed service: %d %q", code, line)
	}
	if owner, err := exec.Command("stat", "-c", "%U", "/var/lib/otabox/firmware/meter-4.0.0.bin").Output(); err != nil || strings.TrimSpace(string(owner)) != "otabox" {
		t.Errorf("the uploaded file is owned by %s (%v)", owner, err)
	}
	dev := emu.New(emu.ESP8266v31)
	dev.STAMAC = "5C:CF:7F:00:00:E1"
	if res := dev.Update(addr, "/meter-4.0.0.bin"); res.Outcome != emu.OK || !bytes.Equal(res.Image, img) {
		t.Errorf("a device downloading the image uploaded to the installed service: %v", res)
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

// TestReleaseServesNoSamples: a release archive installed into a scratch
// root and started as the unit starts it (StateDirectory, no catalog
// flag) offers no sample firmware; it says how to add some, and serves
// what is copied into /var/lib/otabox/firmware. The unit passes
// systemd-analyze verify.
func TestReleaseServesNoSamples(t *testing.T) {
	dist := t.TempDir()
	if out, err := exec.Command("make", "release", "DIST="+dist, "VERSION=test").CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	root := t.TempDir()
	untar(t, filepath.Join(dist, "otabox_test_linux_amd64.tar.gz"), root)
	bin := filepath.Join(root, "otabox")
	if out, _ := exec.Command(bin, "list").CombinedOutput(); strings.Contains(string(out), ".bin") {
		t.Fatalf("the release lists firmware:\n%s", out)
	}
	state := filepath.Join(root, "var/lib/otabox")
	os.MkdirAll(state, 0o755)
	cmd := []string{"env", "STATE_DIRECTORY=" + state, bin}
	r := startCmd(t, cmd)
	waitLog(t, r, "the catalog has no firmware yet: copy .bin files into "+filepath.Join(state, "firmware"))
	d := emu.New(emu.ESP8266v31)
	if list := d.Catalog(r.addr, "."); len(list.Firmwares) != 0 {
		t.Fatalf("a fresh install offers %+v", list.Firmwares)
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, `id="catalog-empty"`) {
		t.Error("the status page does not say the catalog is empty")
	}
	fw, _ := firmware.ReadFile("firmware/blink-esp8266.bin")
	os.WriteFile(filepath.Join(state, "firmware", "app.bin"), fw, 0o644)
	deadline := time.Now().Add(15 * time.Second)
	for len(d.Catalog(r.addr, ".").Firmwares) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("a copied image was not picked up:\n%s", r.log.all.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	unit, _ := os.ReadFile(filepath.Join(root, "otabox.service"))
	if !strings.Contains(string(unit), "ExecReload=/bin/kill -HUP $MAINPID") {
		t.Error("the unit has no ExecReload")
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skipOrFail(t, "systemd-analyze not installed (apt-get install systemd)")
	}
	test := filepath.Join(t.TempDir(), "otabox.service") // ExecStart must exist: point it at the unpacked binary
	os.WriteFile(test, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/otabox", bin)), 0o644)
	if out, err := exec.Command(analyze, "verify", test).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestReleaseBakesFirmware: make release FIRMWARE=dir carries exactly that
// folder's images (a file its build leaves out, or one that is no image,
// is named and not embedded), and the bake leaves nothing behind in the tree or in
// its own temporary folder (this test's TMPDIR: another clone's bakes in
// the machine's /tmp are not its business).
func TestReleaseBakesFirmware(t *testing.T) {
	fwdir, dist, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	mk := func(args ...string) *exec.Cmd {
		cmd := exec.Command("make", args...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		return cmd
	}
	img, _ := firmware.ReadFile("firmware/lab/sensor-esp8266-1m.bin")
	os.MkdirAll(filepath.Join(fwdir, "site"), 0o755)
	os.WriteFile(filepath.Join(fwdir, "site", "meter.bin"), img, 0o644)
	// Left out, and not embedded: a space in the name, and a file that is
	// no image.
	leftOut := append([]byte{0xE9}, []byte("LEFT-OUT-MARKER-7f3a19")...)
	os.WriteFile(filepath.Join(fwdir, "my firmware.bin"), leftOut, 0o644)
	os.WriteFile(filepath.Join(fwdir, "notes.txt"), []byte("NOTES-MARKER-91c2e4: flash the meter first"), 0o644)
	out, err := mk("release", "DIST="+dist, "VERSION=test", "FIRMWARE="+fwdir).CombinedOutput()
	if err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "left out my firmware.bin") || !strings.Contains(string(out), "left out notes.txt: not a firmware image") {
		t.Errorf("the build did not name the files it left out:\n%s", out)
	}
	root := t.TempDir()
	untar(t, filepath.Join(dist, "otabox_test_linux_amd64.tar.gz"), root)
	bin, _ := os.ReadFile(filepath.Join(root, "otabox"))
	for _, marker := range []string{"LEFT-OUT-MARKER-7f3a19", "NOTES-MARKER-91c2e4"} {
		if bytes.Contains(bin, []byte(marker)) {
			t.Errorf("the release binary embeds a file its build left out (%s)", marker)
		}
	}
	if _, err := os.Stat(filepath.Join(fwdir, "notes.txt")); err != nil {
		t.Errorf("the bake touched the FIRMWARE folder itself: %v", err)
	}
	if v, err := exec.Command(filepath.Join(root, "otabox"), "version").Output(); err != nil || !strings.Contains(string(v), "otabox version test, built 20") {
		t.Errorf("a release's version says no build time: %v %q", err, v)
	}
	list, _ := exec.Command(filepath.Join(root, "otabox"), "list").Output()
	var paths []string
	for _, l := range strings.Split(strings.TrimSpace(string(list)), "\n")[1:] {
		paths = append(paths, strings.Fields(l)[0])
	}
	if strings.Join(paths, " ") != "site/meter.bin" {
		t.Errorf("the release lists %v, want exactly site/meter.bin:\n%s", paths, list)
	}
	// The factory bench's first step: a batch of the baked image, checked
	// against the embedded catalog (no --catalog).
	data := t.TempDir()
	if out, err := exec.Command(filepath.Join(root, "otabox"), "batch", "start", "tray-1", "--image", "site/meter.bin", "--data-dir", data).CombinedOutput(); err != nil || !strings.Contains(string(out), "batch tray-1 open") {
		t.Errorf("batch start on the baked image: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(root, "otabox"), "batch", "start", "tray-2", "--image", "meter.bin", "--data-dir", data).CombinedOutput(); err == nil || !strings.Contains(string(out), `did you mean "site/meter.bin"?`) {
		t.Errorf("batch start on an image the binary lacks: %v\n%s", err, out)
	}
	if _, err := os.Stat(".bake"); err == nil {
		t.Error("a .bake copy was left in the tree")
	}
	// A bake that fails leaves nothing behind either.
	if err := mk("build", "FIRMWARE=/nonexistent").Run(); err == nil {
		t.Error("make build FIRMWARE=/nonexistent succeeded")
	}
	if m, _ := filepath.Glob(filepath.Join(tmp, "otabox-bake.*")); len(m) > 0 {
		t.Errorf("bake copies left behind: %v", m)
	}
}
