package tray

import (
	"fmt"
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

// TestNativeUSBIsToldFromSysfs: a tty whose USB device is Espressif's
// USB-Serial/JTAG (303a:1001, the ESP32-S3's and C3's own port) takes the
// USB-Serial/JTAG reset; one behind a USB-UART bridge (a CP2102, 10c4:ea60)
// the classic DTR/RTS one.
func TestNativeUSBIsToldFromSysfs(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	plug := func(name, usb, vid, pid string) string {
		usbDev := filepath.Join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-1", usb)
		iface := filepath.Join(usbDev, usb+":1.0", name)
		os.MkdirAll(iface, 0o755)
		os.WriteFile(filepath.Join(usbDev, "idVendor"), []byte(vid+"\n"), 0o644)
		os.WriteFile(filepath.Join(usbDev, "idProduct"), []byte(pid+"\n"), 0o644)
		os.MkdirAll(filepath.Join(sys, "class/tty", name), 0o755)
		os.Symlink(filepath.Dir(iface), filepath.Join(sys, "class/tty", name, "device"))
		os.MkdirAll(dev, 0o755)
		p := filepath.Join(dev, name)
		os.WriteFile(p, nil, 0o644)
		return p
	}
	if native := plug("ttyACM0", "1-1.2", "303a", "1001"); !usbJTAGIn(sys, native) {
		t.Errorf("native USB (%v) not told", fmt.Sprint(usbIDsIn(sys, native)))
	}
	if bridge := plug("ttyUSB0", "1-1.3", "10c4", "ea60"); usbJTAGIn(sys, bridge) {
		t.Errorf("a CP2102 taken for native USB")
	}
}
