package tray

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSlotSurvivesReenumeration: a board on hub port 1-1.3 is slot
// "1-1.3" whether the kernel names it ttyUSB0 or, after a swap or a
// native-USB board's reset, ttyACM1, and whether it is given by its /dev
// name or its /dev/serial/by-path link (a sysfs tree as Linux lays it out).
func TestSlotSurvivesReenumeration(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	plug := func(name, usb string) string {
		iface := filepath.Join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-1", usb, usb+":1.0", name)
		os.MkdirAll(iface, 0o755)
		os.MkdirAll(filepath.Join(sys, "class/tty", name), 0o755)
		os.Remove(filepath.Join(sys, "class/tty", name, "device"))
		if err := os.Symlink(filepath.Dir(iface), filepath.Join(sys, "class/tty", name, "device")); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(dev, 0o755)
		p := filepath.Join(dev, name)
		os.WriteFile(p, nil, 0o644)
		return p
	}
	first := plug("ttyUSB0", "1-1.3")
	if got := usbPathIn(sys, first); got != "1-1.3" {
		t.Fatalf("ttyUSB0: %q", got)
	}
	again := plug("ttyACM1", "1-1.3")
	byPath := filepath.Join(dev, "serial-by-path-usb-0:1.3:1.0")
	os.Symlink(again, byPath)
	for _, p := range []string{again, byPath} {
		if got := usbPathIn(sys, p); got != "1-1.3" {
			t.Errorf("%s after re-enumeration: %q", filepath.Base(p), got)
		}
	}
	if got := usbPathIn(sys, filepath.Join(dev, "ttyS0")); got != "" {
		t.Errorf("a line that is no USB device: %q", got)
	}
}
