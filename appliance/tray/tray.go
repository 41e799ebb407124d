// Package tray flashes a tray of blank ESP boards at once over their
// serial ports, one goroutine per port: each board's chip and MAC are read
// from its ROM, the image is checked against the chip before the first
// write, written, verified by the ROM's MD5 where it has one, and the
// board's row says what happened. A slot is where a board sits on the
// tray, not a /dev name: named by the operator ("3=/dev/ttyUSB0"), else
// the USB path of its port, which survives a swap and a re-enumeration.
package tray

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"otabox/appliance/espimage"
	"otabox/appliance/romloader"
	"otabox/appliance/store"
)

// Part is one file written at an offset.
type Part struct {
	Offset uint32
	Name   string
	Data   []byte
	SHA256 string
	// Image is the ESP image header of the part, when it has one: its
	// family and chip are checked against the board's.
	Image *espimage.Image
}

// NewPart reads what a part says of itself.
func NewPart(offset uint32, name string, data []byte) Part {
	sum := sha256.Sum256(data)
	p := Part{Offset: offset, Name: name, Data: data, SHA256: hex.EncodeToString(sum[:])}
	if len(data) > 0 && data[0] == espimage.Magic {
		if img, err := espimage.Parse(data); err == nil {
			p.Image = img
		}
	}
	return p
}

// ParsePart reads "OFFSET=FILE" (0x10000=app.bin); the file is read by
// the caller.
func ParsePart(arg string) (offset uint32, file string, err error) {
	o, f, ok := strings.Cut(arg, "=")
	if !ok || f == "" {
		return 0, "", fmt.Errorf("%q: give OFFSET=FILE (0x10000=app.bin)", arg)
	}
	n, err := strconv.ParseUint(o, 0, 32)
	if err != nil {
		return 0, "", fmt.Errorf("%q: offset %q is not a number", arg, o)
	}
	return uint32(n), f, nil
}

// Slot is one port on the tray.
type Slot struct {
	Name string // "3", or the USB path "1-1.3"
	Port string // what Open takes
}

// ParseSlots reads --port values: "SLOT=PORT" or a bare port, whose slot
// is its USB path, or its place in the list for a line that has none.
func ParseSlots(args []string) ([]Slot, error) {
	if len(args) == 0 {
		return nil, ErrNoPorts
	}
	var slots []Slot
	seen := map[string]bool{}
	for i, a := range args {
		s := Slot{Port: a}
		if name, port, ok := strings.Cut(a, "="); ok && !strings.Contains(name, "/") && !strings.Contains(name, ":") {
			s = Slot{Name: name, Port: port}
		}
		if s.Name == "" {
			if s.Name = USBPath(s.Port); s.Name == "" {
				s.Name = strconv.Itoa(i + 1)
			}
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("slot %s is given twice", s.Name)
		}
		seen[s.Name] = true
		slots = append(slots, s)
	}
	return slots, nil
}

// Board is one board's row.
type Board struct {
	Slot     string        `json:"slot"`
	Port     string        `json:"port"`
	Chip     string        `json:"chip,omitempty"`
	MAC      string        `json:"mac,omitempty"`
	Parts    []Written     `json:"parts,omitempty"`
	Bytes    int           `json:"bytes"`
	Took     time.Duration `json:"took_ns"`
	Verified string        `json:"verified"` // "md5" or "written, not verified (...)"
	Baud     int           `json:"baud"`
	// Revision is the chip's revision where its eFuses tell it (ESP32).
	Revision string `json:"revision,omitempty"`
	// FlashID is the flash chip's JEDEC id; FlashSize the size it names.
	FlashID   string `json:"flash_id,omitempty"`
	FlashSize int64  `json:"flash_size,omitempty"`
	Passed    bool   `json:"passed"`
	// Refused says nothing was written: the image is for another chip.
	Refused bool   `json:"refused,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Written is one part as written to one board.
type Written struct {
	Offset uint32 `json:"offset"`
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Bytes  int    `json:"bytes"`
	MD5    string `json:"md5,omitempty"` // the flash's, read back by the ROM
}

// Options tune a run.
type Options struct {
	// Parallel bounds the boards flashed at once; 8 when zero.
	Parallel int
	// Progress, when set, is told each slot's bytes written.
	Progress func(slot string, done, total int)
	// Detected, when set, is told each slot's chip and MAC once its ROM
	// said them, before anything is written.
	Detected func(slot, chip, mac string)
	// Flash sets the bootloader header's flash mode, size and frequency
	// (all "keep" when zero).
	Flash FlashParams
	// BoardData, when set, is written to each board with its own values;
	// Batch names the batch for its {batch}.
	BoardData *BoardData
	Batch     string
	// Open opens a port; tray.Open when nil.
	Open func(spec string) (Port, error)
	// Baud is the rate to write at once the ROM is synced at 115,200
	// (CHANGE_BAUDRATE); 0 stays at 115,200. The ESP8266 ROM cannot
	// change it and stays.
	Baud int
}

// Plan says what to write onto a board of chip (as its ROM names it), or
// why nothing is.
type Plan func(chip string) ([]Part, error)

// Fixed is the same parts for every board.
func Fixed(parts []Part) Plan { return func(string) ([]Part, error) { return parts, nil } }

// Flash flashes what plan gives each board onto every slot's board at
// once and returns a row per slot, in slot order. A board that fails is
// its row's reason; the others go on.
func Flash(ctx context.Context, slots []Slot, plan Plan, opts Options) []Board {
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.Open == nil {
		opts.Open = Open
	}
	rows := make([]Board, len(slots))
	sem := make(chan struct{}, opts.Parallel)
	var wg sync.WaitGroup
	for i, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rows[i] = flashOne(ctx, s, plan, opts)
		}()
	}
	wg.Wait()
	sort.SliceStable(rows, func(i, j int) bool { return slotLess(rows[i].Slot, rows[j].Slot) })
	return rows
}

func slotLess(a, b string) bool {
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	if ea == nil && eb == nil {
		return na < nb
	}
	return a < b
}

func flashOne(ctx context.Context, s Slot, plan Plan, opts Options) (row Board) {
	row = Board{Slot: s.Name, Port: s.Port}
	start := time.Now()
	defer func() { row.Took = time.Since(start) }()
	fail := func(format string, args ...any) Board {
		row.Reason = fmt.Sprintf(format, args...)
		return row
	}
	p, err := opts.Open(s.Port)
	if err != nil {
		return fail("%v", err)
	}
	defer p.Close()
	if _, err := p.Reset(); err != nil {
		return fail("%v", err)
	}
	l := romloader.New(p)
	if err := l.Sync(ctx, 10); err != nil {
		return fail("%v", err)
	}
	chip, err := l.Detect()
	if err != nil {
		return fail("%v", err)
	}
	row.Chip = chip.Name
	if row.MAC, err = l.MAC(); err != nil {
		return fail("%v", err)
	}
	if opts.Detected != nil {
		opts.Detected(s.Name, chip.Name, row.MAC)
	}
	if rev, err := l.Revision(); err == nil {
		row.Revision = rev
	}
	if id, err := l.FlashID(); err == nil {
		row.FlashID, row.FlashSize = fmt.Sprintf("%06x", id), romloader.FlashSize(id)
	}
	parts, err := plan(chip.Name)
	if err != nil {
		row.Refused = true
		return fail("%v: nothing written", err)
	}
	if parts, err = opts.Flash.apply(parts, chip, row.FlashSize); err != nil {
		row.Refused = true
		return fail("%v: nothing written", err)
	}
	if opts.BoardData != nil {
		bd, err := opts.BoardData.part(parts, row.MAC, s.Name, chip.Name, opts.Batch)
		if err != nil {
			row.Refused = true
			return fail("%v: nothing written", err)
		}
		parts = append(append([]Part(nil), parts...), bd)
	}
	for _, part := range parts {
		if int64(part.Offset)+int64(len(part.Data)) > row.FlashSize && row.FlashSize > 0 {
			row.Refused = true
			return fail("%s at 0x%x ends past the board's %d MB of flash: nothing written", part.Name, part.Offset, row.FlashSize>>20)
		}
		if why := fits(part, chip); why != "" {
			row.Refused = true
			return fail("%s: nothing written", why)
		}
	}
	row.Baud = 115200
	if opts.Baud > 0 && opts.Baud != row.Baud {
		switch err := l.ChangeBaud(uint32(opts.Baud), 115200); {
		case errors.Is(err, romloader.ErrUnsupported):
			// the ESP8266 ROM: stays at 115,200
		case err != nil:
			return fail("change baud rate to %d: %v", opts.Baud, err)
		default:
			if err := p.SetBaud(opts.Baud); err != nil {
				return fail("change baud rate to %d: %v", opts.Baud, err)
			}
			time.Sleep(50 * time.Millisecond) // the ROM switches after its answer
			row.Baud = opts.Baud
		}
	}
	total := 0
	for _, part := range parts {
		total += len(part.Data)
	}
	row.Verified = "md5"
	if !chip.ROMMD5 && !l.Stub {
		row.Verified = "written, not verified (the " + chip.Name + " ROM has no MD5 command)"
	}
	for _, part := range parts {
		base := row.Bytes
		sum, err := l.WriteFlash(ctx, part.Data, part.Offset, func(done, _ int) {
			if opts.Progress != nil {
				opts.Progress(s.Name, base+done, total)
			}
		})
		w := Written{Offset: part.Offset, File: part.Name, SHA256: part.SHA256, MD5: sum}
		if err != nil {
			row.Parts = append(row.Parts, w)
			return fail("%s at 0x%x: %v", part.Name, part.Offset, err)
		}
		w.Bytes = len(part.Data)
		row.Parts = append(row.Parts, w)
		row.Bytes += len(part.Data)
		if sum != "" && sum != romloader.MD5(part.Data) {
			return fail("%s at 0x%x: the flash reads back with MD5 %s, the file's is %s", part.Name, part.Offset, sum, romloader.MD5(part.Data))
		}
	}
	if err := l.FlashEnd(true); err != nil && !errors.Is(err, context.Canceled) {
		// The ROM may reboot before it answers; the image is written and verified.
		row.Reason = "written; the board did not confirm leaving the loader (" + err.Error() + ")"
	}
	row.Passed = true
	return row
}

// fits says why part cannot go onto chip ("" when it can): an ESP image
// built for another chip is refused before the first write.
func fits(part Part, chip *romloader.Chip) string {
	img := part.Image
	if img == nil {
		return ""
	}
	if chip.Name == "ESP8266" {
		if img.Family != espimage.ESP8266 {
			return fmt.Sprintf("%s is an %s image, the board is an ESP8266", part.Name, img.Chip)
		}
		return ""
	}
	if img.Family != espimage.ESP32 {
		return fmt.Sprintf("%s is an ESP8266 image, the board is an %s", part.Name, chip.Name)
	}
	if want, ok := espimage.ParseChip(chip.Name); ok && img.Chip != want {
		return fmt.Sprintf("%s is built for %s, the board is an %s", part.Name, img.Chip, chip.Name)
	}
	return ""
}

// App is the application among parts for a board of chip: what the board
// runs once it boots, whose digests it reports when it checks in (the
// part at 0 on an ESP8266; on the ESP32 family the part at 0x10000, or
// the app inside a merged image at 0). Nil when none is an image.
func App(parts []Part, chip string) (name string, img *espimage.Image) {
	const appOffset = 0x10000
	for _, p := range parts {
		switch {
		case chip == "ESP8266" && p.Offset == 0:
			return p.Name, p.Image
		case chip != "ESP8266" && p.Offset == appOffset:
			return p.Name, p.Image
		case chip != "ESP8266" && p.Offset == 0 && len(p.Data) > appOffset && p.Data[appOffset] == espimage.Magic:
			if img, err := espimage.Parse(p.Data[appOffset:]); err == nil {
				return p.Name, img
			}
		}
	}
	return "", nil
}

// Record is rows as the fleet record keeps them.
func Record(rows []Board, plan Plan) []store.Flashed {
	now := time.Now()
	out := make([]store.Flashed, 0, len(rows))
	for _, r := range rows {
		parts, _ := plan(r.Chip)
		size := int64(0)
		for _, p := range parts {
			size += int64(len(p.Data))
		}
		f := store.Flashed{Time: now.Add(-r.Took), Slot: r.Slot, Port: r.Port, MAC: r.MAC, Chip: r.Chip, Bytes: int64(r.Bytes), Size: size,
			Passed: r.Passed, Refused: r.Refused, Reason: r.Reason, Took: r.Took, FlashSize: -1, Verified: r.Verified, Revision: r.Revision, FlashID: r.FlashID}
		if r.FlashSize > 0 {
			f.FlashSize = r.FlashSize
		}
		f.Family = "ESP32"
		if r.Chip == "ESP8266" {
			f.Family = "ESP8266"
		}
		if r.Chip == "" {
			f.Family = ""
		}
		if name, img := App(parts, r.Chip); img != nil {
			f.Image, f.Version = name, img.Version
			f.Digests = append(append([]string(nil), img.Digests.RunningMD5...), img.Digests.RunningSHA256)
			for _, p := range parts {
				if p.Name == name {
					f.SHA256 = p.SHA256
				}
			}
			for _, w := range r.Parts {
				if w.File == name {
					f.SHA256 = w.SHA256 // as written: flash parameters may have changed it
				}
			}
		} else if len(parts) > 0 {
			f.Image, f.SHA256 = parts[len(parts)-1].Name, parts[len(parts)-1].SHA256
		}
		out = append(out, f)
	}
	return out
}

// Live keeps each slot's chip, MAC and bytes while a tray is flashed, for
// whoever shows it (the station page, through the record).
type Live struct {
	mu    sync.Mutex
	slots map[string]*store.Flashing
}

// NewLive is an empty Live; its Progress and Detected go into Options.
func NewLive() *Live { return &Live{slots: map[string]*store.Flashing{}} }

func (l *Live) slot(name string) *store.Flashing {
	f, ok := l.slots[name]
	if !ok {
		f = &store.Flashing{Slot: name}
		l.slots[name] = f
	}
	return f
}

// Detected notes a slot's chip and MAC.
func (l *Live) Detected(slot, chip, mac string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.slot(slot)
	f.Chip, f.MAC, f.Family = chip, mac, "ESP32"
	if chip == "ESP8266" {
		f.Family = "ESP8266"
	}
}

// Progress notes a slot's bytes written.
func (l *Live) Progress(slot string, done, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.slot(slot)
	f.Done, f.Total = int64(done), int64(total)
}

// Snapshot is every slot's state now, by slot.
func (l *Live) Snapshot() []store.Flashing {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]store.Flashing, 0, len(l.slots))
	for _, f := range l.slots {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return slotLess(out[i].Slot, out[j].Slot) })
	return out
}
