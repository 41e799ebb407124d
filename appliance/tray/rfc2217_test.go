package tray_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
	"otabox/appliance/tray"
)

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI: %s", why)
	}
	t.Skip(why)
}

// TestFlashOverRFC2217: a board behind ser2net's telnet(rfc2217)
// accepter (Debian's ser2net, a server no one here wrote, serving the
// board's serial line: a pty with the emulator on its other side) is
// flashed over rfc2217://: telnet negotiated, baud rate and modem lines
// sent as Com Port Control commands, data bytes 0xFF doubled both ways
// (the image is random, so it has plenty), and read back byte for byte.
func TestFlashOverRFC2217(t *testing.T) {
	ser2net, err := exec.LookPath("ser2net")
	if err != nil {
		skipOrFail(t, "needs Debian's ser2net (apt-get install ser2net; .ci/run does)")
	}
	c, _ := romloader.ChipNamed("ESP32")
	board := romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 0x22, 0x17, 0x01}, 4<<20)
	line, _ := onPTY(t, board)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a free port for ser2net
	host, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "ser2net.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`connection: &board
  accepter: telnet(rfc2217),tcp,%s,%s
  connector: serialdev,%s,115200n81,local
  options:
    kickolduser: true
`, host, port, line)), 0o644)
	cmd := exec.Command(ser2net, "-n", "-d", "-c", conf, "-P", filepath.Join(t.TempDir(), "pid"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 50; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	img := make([]byte, 120000)
	rand.Read(img)
	rows := tray.Flash(context.Background(), []tray.Slot{{Name: "1", Port: "rfc2217://" + addr}}, tray.Fixed([]tray.Part{tray.NewPart(0x10000, "app.bin", img)}), tray.Options{Baud: 460800})
	if !rows[0].Passed || !bytes.Equal(board.Read(0x10000, len(img)), img) || rows[0].MAC != "24:6F:28:22:17:01" {
		t.Fatalf("over rfc2217: %+v\nser2net: %s", rows[0], strings.TrimSpace(log.String()))
	}
}
