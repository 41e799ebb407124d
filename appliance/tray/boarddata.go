package tray

import (
	"fmt"
	"strconv"
	"strings"

	"otabox/appliance/nvs"
)

// BoardData is a small NVS partition written to each board with its own
// values (a serial number, what the tray knew of it), in namespace
// "otabox": the app reads them with nvs_open_from_partition(). Its offset
// and size must be a partition of the board's table (a data/nvs line).
type BoardData struct {
	Offset uint32
	Size   int
	// Values are KEY=TEMPLATE: the template's {mac} (24:6F:28:…), {mac12}
	// (246F28…), {slot}, {chip} and {batch} are the board's.
	Values []string
}

// ParseBoardData reads "OFFSET:SIZE" (0x3f0000:0x3000) and KEY=TEMPLATE values.
func ParseBoardData(where string, values []string) (*BoardData, error) {
	o, s, ok := strings.Cut(where, ":")
	off, err1 := strconv.ParseUint(o, 0, 32)
	size, err2 := strconv.ParseUint(s, 0, 32)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("board data %q: give OFFSET:SIZE of its NVS partition (0x3f0000:0x3000)", where)
	}
	d := &BoardData{Offset: uint32(off), Size: int(size), Values: values}
	if d.Offset%0x1000 != 0 {
		return nil, fmt.Errorf("board data at 0x%x: a partition starts on a 4 KB boundary", d.Offset)
	}
	if _, err := d.build("24:6F:28:00:00:00", "1", "ESP32", "batch"); err != nil {
		return nil, err
	}
	return d, nil
}

// Namespace is where a board's values are.
const Namespace = "otabox"

// build is the partition for one board.
func (d *BoardData) build(mac, slot, chip, batch string) ([]byte, error) {
	r := strings.NewReplacer("{mac}", mac, "{mac12}", strings.ReplaceAll(mac, ":", ""), "{slot}", slot, "{chip}", chip, "{batch}", batch)
	var vals []nvs.Value
	for _, kv := range d.Values {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("board value %q: give KEY=TEMPLATE (serial=ACME-{mac12})", kv)
		}
		vals = append(vals, nvs.Value{Key: k, Str: r.Replace(v)})
	}
	return nvs.Build(d.Size, Namespace, vals)
}

// part is the board's partition as a Part, refused where it overlaps
// another part.
func (d *BoardData) part(parts []Part, mac, slot, chip, batch string) (Part, error) {
	for _, p := range parts {
		if int64(p.Offset) < int64(d.Offset)+int64(d.Size) && int64(d.Offset) < int64(p.Offset)+int64(len(p.Data)) {
			return Part{}, fmt.Errorf("board data at 0x%x overlaps %s at 0x%x", d.Offset, p.Name, p.Offset)
		}
	}
	b, err := d.build(mac, slot, chip, batch)
	if err != nil {
		return Part{}, err
	}
	return NewPart(d.Offset, "board-data.nvs", b), nil
}
