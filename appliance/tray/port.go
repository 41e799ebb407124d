package tray

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"go.bug.st/serial"
)

// Port is the line to one board: a USB serial adapter or a board's own
// USB-Serial/JTAG, or a TCP connection to one (ser2net's raw mode, a
// remote bench, the tests' emulator).
type Port interface {
	io.ReadWriteCloser
	// Reset puts the board into its ROM download mode; false when the
	// line has no modem lines to do it with (TCP).
	Reset() (bool, error)
	// SetBaud sets the host side's rate (a TCP line has none: no-op).
	SetBaud(baud int) error
}

// Open opens spec: "socket://host:port" (a raw TCP line), "rfc2217://host:port"
// (a serial port over telnet, RFC 2217: baud rate and modem lines set on
// the far side), or a serial device path (a /dev name or a
// /dev/serial/by-path link).
func Open(spec string) (Port, error) {
	switch {
	case strings.HasPrefix(spec, "socket://"):
		addr := strings.TrimPrefix(spec, "socket://")
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("port %s: %w", spec, err)
		}
		return tcpPort{c}, nil
	case strings.HasPrefix(spec, "rfc2217://"):
		p, err := openRFC2217(strings.TrimPrefix(spec, "rfc2217://"))
		if err != nil {
			return nil, fmt.Errorf("port %s: %w", spec, err)
		}
		return p, nil
	case strings.Contains(spec, "://"):
		return nil, fmt.Errorf("port %s: unknown scheme (socket://host:port, or a /dev path)", spec)
	}
	p, err := serial.Open(spec, &serial.Mode{BaudRate: 115200})
	if err != nil {
		return nil, fmt.Errorf("port %s: %w", spec, err)
	}
	return serialPort{Port: p, usbJTAG: USBSerialJTAG(spec)}, nil
}

type tcpPort struct{ net.Conn }

func (tcpPort) Reset() (bool, error) { return false, nil }
func (tcpPort) SetBaud(int) error    { return nil }

type serialPort struct {
	serial.Port
	usbJTAG bool // the chip's own USB-Serial/JTAG (ESP32-S3, C3), not a USB-UART bridge
}

func (p serialPort) SetBaud(baud int) error { return p.SetMode(&serial.Mode{BaudRate: baud}) }

// Reset is the reset into the ROM loader the esptool documentation
// ("Entering the Bootloader") describes: the classic auto-reset circuit
// (DTR drives IO0 and RTS drives EN through two transistors: EN low, then
// IO0 low as EN rises, then IO0 released), or, for chips on their own
// USB-Serial/JTAG, the sequence its peripheral decodes from the two lines.
func (p serialPort) Reset() (bool, error) {
	seq := classicReset
	if p.usbJTAG {
		seq = usbJTAGReset
	}
	err := seq.run(func(dtr, rts bool) error {
		if err := p.SetDTR(dtr); err != nil {
			return err
		}
		return p.SetRTS(rts)
	})
	if errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EINVAL) {
		// No modem lines (a pseudo-terminal, an adapter without
		// them): the board must already be in download mode.
		return false, p.ResetInputBuffer()
	}
	if err != nil {
		return true, err
	}
	return true, p.ResetInputBuffer()
}

// lineStep is one state of the DTR and RTS lines, held for wait.
type lineStep struct {
	dtr, rts bool
	wait     time.Duration
}

// resetSequence is a reset into the ROM loader as line states.
type resetSequence []lineStep

var (
	// classicReset drives the two-transistor auto-reset circuit of
	// USB-UART boards: EN low, IO0 low as EN rises, IO0 released.
	classicReset = resetSequence{{false, true, 100 * time.Millisecond}, {true, false, 50 * time.Millisecond}, {false, false, 0}}
	// usbJTAGReset is what the USB-Serial/JTAG peripheral of the
	// ESP32-S3 and C3 decodes from the lines as "reset into download".
	usbJTAGReset = resetSequence{{false, false, 100 * time.Millisecond}, {true, false, 100 * time.Millisecond}, {false, true, 100 * time.Millisecond}, {false, false, 0}}
)

// run sets each step's lines with set and waits; the first error stops it.
func (seq resetSequence) run(set func(dtr, rts bool) error) error {
	for _, s := range seq {
		if err := set(s.dtr, s.rts); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		time.Sleep(s.wait)
	}
	return nil
}

// usbPath matches a USB device's path in sysfs ("1-1.3" of ".../1-1.3:1.0/ttyUSB0").
var usbPath = regexp.MustCompile(`^\d+-[\d.]+$`)

// USBPath is the USB path ("1-1.3": bus 1, port 1, hub port 3) of a
// serial device, from sysfs: it stays the same when a board on that hub
// port is swapped or re-enumerates under another /dev name. "" for a line
// that is not a USB device.
func USBPath(dev string) string { return usbPathIn("/sys", dev) }

func usbPathIn(sys, dev string) string {
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return ""
	}
	link, err := filepath.EvalSymlinks(filepath.Join(sys, "class/tty", filepath.Base(real), "device"))
	if err != nil {
		return ""
	}
	parts := strings.Split(link, string(os.PathSeparator))
	for i := len(parts) - 1; i >= 0; i-- {
		if usbPath.MatchString(parts[i]) {
			return parts[i]
		}
	}
	return ""
}

// USBSerialJTAG reports a serial device that is an Espressif chip's own
// USB-Serial/JTAG peripheral (USB vendor 303a, product 1001), which takes
// its own reset sequence, from sysfs.
func USBSerialJTAG(dev string) bool { return usbJTAGIn("/sys", dev) }

func usbJTAGIn(sys, dev string) bool {
	vid, pid := usbIDsIn(sys, dev)
	return vid == "303a" && pid == "1001"
}

// usbIDsIn reads the USB vendor and product id of the device a tty
// belongs to: the idVendor and idProduct beside its interface.
func usbIDsIn(sys, dev string) (vid, pid string) {
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return "", ""
	}
	iface, err := filepath.EvalSymlinks(filepath.Join(sys, "class/tty", filepath.Base(real), "device"))
	if err != nil {
		return "", ""
	}
	for dir := iface; dir != "/" && dir != "." && strings.HasPrefix(dir, sys); dir = filepath.Dir(dir) {
		v, err1 := os.ReadFile(filepath.Join(dir, "idVendor"))
		p, err2 := os.ReadFile(filepath.Join(dir, "idProduct"))
		if err1 == nil && err2 == nil {
			return strings.TrimSpace(string(v)), strings.TrimSpace(string(p))
		}
	}
	return "", ""
}

// ErrNoPorts is a tray with nothing to flash.
var ErrNoPorts = errors.New("no port given: name each board's port (--port /dev/ttyUSB0, --port 3=socket://host:port)")
