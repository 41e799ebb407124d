package catalog

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"otabox/appliance/espimage"
)

// JSONBudget is the device's StaticJsonDocument<256> (AutoConnect's
// AUTOCONNECT_UPDATE_CATALOG_JSONBUFFER_SIZE): every catalog entry must fit
// it, or the device loses the whole list with "NoMemory" (spec §3).
const JSONBudget = 256

// binEntry and plainEntry are the reference server's two entry shapes, in
// its key order.
type binEntry struct {
	Name string `json:"name"`
	Type Type   `json:"type"`
	Date string `json:"date"`
	Time string `json:"time"`
	Size int64  `json:"size"`
}

type plainEntry struct {
	Name string `json:"name"`
	Type Type   `json:"type"`
}

// offered reports whether e is offered as "bin" to family f.
func offered(e *Entry, f espimage.Family) bool {
	return e.Type == Bin && (f == espimage.FamilyUnknown || e.Image.Family == f)
}

func render(d *Dir, f espimage.Family) []byte {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, e := range d.Entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(entryJSON(e, f))
	}
	if len(d.Entries) == 0 {
		// "[]" makes AutoConnect show "Invalid catalog list:InvalidInput";
		// one non-bin entry makes it show "No available firmwares" (§3.1).
		buf.Write(mustJSON(plainEntry{Name: ".", Type: Directory}))
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

func entryJSON(e *Entry, f espimage.Family) []byte {
	switch {
	case offered(e, f):
		return mustJSON(binEntry{e.Name, Bin, e.Date, e.Time, e.Size})
	case e.Type == Directory:
		return mustJSON(plainEntry{e.Name, Directory})
	}
	return mustJSON(plainEntry{e.Name, File})
}

// entryCost is what the entry's largest rendering costs ArduinoJson 6 on a
// 32-bit device: 16 bytes per member, plus every key and string value
// copied with its NUL. Deduplication of equal strings (ArduinoJson 6.16+)
// is not counted, so the figure holds for every 6.x a device may run.
func entryCost(e *Entry) int {
	return jsonCost(entryJSON(e, espimage.FamilyUnknown)) // the "bin" form, the largest
}

// jsonCost computes the ArduinoJson 6 pool cost of one flat JSON object.
func jsonCost(obj []byte) int {
	var m map[string]any
	if err := json.Unmarshal(obj, &m); err != nil {
		return 1 << 30
	}
	cost := 0
	for k, v := range m {
		cost += 16 + len(k) + 1
		if s, ok := v.(string); ok {
			cost += len(s) + 1
		}
	}
	return cost
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("catalog: " + err.Error()) // strings and integers only: cannot fail
	}
	return b
}

func md5hex(b []byte) string    { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
