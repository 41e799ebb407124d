package main

// The command line says what it cannot answer, in one line with an exit
// code, instead of an empty answer or a page of help (issue 25's defects).

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"otabox/appliance/emu"
)

// run is otabox with args: its output (stdout and stderr) and exit code.
func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(otabox, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestCommandLineSaysWhatItCannotAnswer: each refusal is one line with
// exit code 2 (a usage slip) or 1 (nothing to show), never an empty
// answer with 0 or a page of help.
func TestCommandLineSaysWhatItCannotAnswer(t *testing.T) {
	data, dir := t.TempDir(), t.TempDir()
	_, v1, _, _ := fleetCatalog(t)
	os.WriteFile(filepath.Join(dir, "meter.bin"), v1, 0o644)
	r := startData(t, data, "--catalog", dir)
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.Running = "5C:CF:7F:12:34:56", v1
	d.Update(r.addr, "/update")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a misspelt batch command is answered with the closest", []string{"batch", "strt"}, 2, `no command "strt"; did you mean "start"? (start, close, list)`},
		{"batch start without --image says what is missing", []string{"batch", "start", "tray-1", "--data-dir", data}, 2, "--image is required"},
		{"devices --state with an unknown state is refused", []string{"devices", "--state", "bogus", "--data-dir", data}, 2, `unknown state "bogus" (sent, cut-off, confirmed, failed, none, held, problem)`},
		{"history of what is not a MAC is refused", []string{"history", "5c-cf-7f", "--data-dir", data}, 2, "is not a MAC"},
		{"history takes a MAC written with dashes", []string{"history", "5c-cf-7f-12-34-56", "--data-dir", data}, 0, "GET /update  304"},
		{"history of a device never seen says so", []string{"history", "5C:CF:7F:00:00:99", "--data-dir", data}, 1, "no requests of 5C:CF:7F:00:00:99 in the record"},
		{"list --catalog's help says what it does for list", []string{"list", "--help"}, 0, "list the firmware in this directory"},
		{"--max-upload outside 1 to 128 MiB is refused", []string{"serve", "--max-upload", "0", "--data-dir", data}, 2, "--max-upload 0: give 1 to 128 MiB"},
		{"batch start with an image path outside the catalog is refused", []string{"batch", "start", "tray-2", "--image", "../x.bin", "--catalog", dir, "--data-dir", data}, 2, `--image "../x.bin": path contains ".."`},
		{"version says when it was built, or that it was not stamped", []string{"version"}, 0, "build time not stamped"},
		{"batch start prints its next commands with the --data-dir it used", []string{"batch", "start", "tray-1", "--image", "meter.bin", "--catalog", dir, "--data-dir", data}, 0, "every device asking /update gets meter.bin 1.0.0 (ESP8266); watch /station, close it with otabox batch close tray-1 --data-dir " + data},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := run(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("otabox %s: exit %d, want %d with %q:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, out)
			}
			if tc.code != 0 && strings.Count(strings.TrimSpace(strings.ReplaceAll(out, "otabox: reading ", "\x00")), "\n") > 1 {
				t.Errorf("more than one line:\n%s", out)
			}
		})
	}
	t.Run("/api/devices with an unknown state is 400 with the reason", func(t *testing.T) {
		resp, err := http.Get("http://" + r.addr + "/api/devices?state=bogus")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("a pin naming a misspelt group is refused with the closest", func(t *testing.T) {
		pol := filepath.Join(t.TempDir(), "policy")
		os.WriteFile(pol, []byte("group lab 5C:CF:7F:*\npin labb meter.bin\n"), 0o644)
		out, code := run(t, "serve", "--catalog", dir, "--policy", pol, "--data-dir", "", "--mdns=false", "-p", "0", "-b", "127.0.0.1")
		if code == 0 || !strings.Contains(out, `pin names group "labb", which no earlier line defines; did you mean "lab"?`) {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
}
