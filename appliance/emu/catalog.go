package emu

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Firmware is one radio button AutoConnect's update page shows.
type Firmware struct {
	Name string
	Date string // as shown
	Time string // first 5 characters, as shown
	Size int    // as<int>()
}

// CatalogResult is what AutoConnect's update page shows after a catalog
// request: the caption and the firmware offered. Err is non-empty when the
// caption is an error ("Update server responds (403):", "Invalid catalog
// list:NoMemory", ...).
type CatalogResult struct {
	Caption   string
	Firmwares []Firmware
	Err       string
	// Costs are the ArduinoJson pool bytes each entry took (of 256).
	Costs []int
}

// JSONBuffer is AUTOCONNECT_UPDATE_CATALOG_JSONBUFFER_SIZE.
const JSONBuffer = 256

// catalogTimeout is HTTPCLIENT_DEFAULT_TCP_TIMEOUT, the catalog's timeout.
const catalogTimeout = 5 * time.Second

// Catalog runs AutoConnectUpdateAct::_onCatalog against addr for uri.
func (d *Device) Catalog(addr, uri string) CatalogResult {
	conn, err := d.dial(addr, catalogTimeout)
	if err != nil {
		return CatalogResult{Err: "Update server responds (-1):connection refused", Caption: "Update server responds (-1):connection refused"}
	}
	defer conn.Close()
	host := d.HostHeader
	if host == "" {
		host = addr
	}
	conn.SetDeadline(time.Now().Add(catalogTimeout))
	conn.Write(d.CatalogRequest(host, uri))
	r := bufio.NewReader(conn)
	resp, err := d.readHead(r)
	if err != nil {
		code := map[string]int{"connection lost": -5, "read Timeout": -11, "no HTTP server": -7}[err.Error()]
		return errResult(fmt.Sprintf("Update server responds (%d):%s", code, err))
	}
	if resp.code != 200 {
		return errResult(fmt.Sprintf("Update server responds (%d):", resp.code))
	}
	return ParseCatalog(r)
}

func errResult(caption string) CatalogResult { return CatalogResult{Caption: caption, Err: caption} }

// ParseCatalog parses a catalog body from the raw stream, as AutoConnect
// does: find '[', then one StaticJsonDocument<256> per element until a ']'
// comes before a ','. Content-Length and chunk framing are not looked at.
func ParseCatalog(r *bufio.Reader) CatalogResult {
	var res CatalogResult
	find(r, "[", "") // Stream::find; its result is ignored
	for {
		p := &parser{r: r, budget: JSONBuffer}
		v, err := p.document()
		if err != nil {
			return errResult("Invalid catalog list:" + err.Error())
		}
		res.Costs = append(res.Costs, p.used)
		if obj, ok := v.(map[string]any); ok && strings.EqualFold(asString(obj["type"]), "bin") {
			tm := asString(obj["time"])
			if len(tm) > 5 {
				tm = tm[:5]
			}
			res.Firmwares = append(res.Firmwares, Firmware{Name: asString(obj["name"]), Date: asString(obj["date"]), Time: tm, Size: asInt(obj["size"])})
		}
		if !find(r, ",", "]") {
			break
		}
	}
	res.Caption = "No available firmwares"
	if len(res.Firmwares) > 0 {
		res.Caption = "Available firmwares"
	}
	return res
}

// find is Stream::find / findUntil: true when target comes first.
func find(r *bufio.Reader, target, terminator string) bool {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return false
		}
		if string(b) == target {
			return true
		}
		if terminator != "" && string(b) == terminator {
			return false
		}
	}
}

// asString is ArduinoJson's as<String>(): null reads "null".
func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "null"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

func asInt(v any) int {
	if f, ok := v.(float64); ok && f >= -2147483648 && f <= 2147483647 {
		return int(f)
	}
	return 0
}

// parser is ArduinoJson 6's deserializer reading from a Stream into a
// fixed pool: 16 bytes per member or element, every string copied with its
// NUL (no deduplication, as before 6.16: the stricter count).
type parser struct {
	r      *bufio.Reader
	budget int
	used   int
	depth  int
}

var (
	errEmpty      = errors.New("EmptyInput")
	errIncomplete = errors.New("IncompleteInput")
	errInvalid    = errors.New("InvalidInput")
	errNoMemory   = errors.New("NoMemory")
	errTooDeep    = errors.New("TooDeep")
)

func (p *parser) alloc(n int) error {
	if p.used+n > p.budget {
		return errNoMemory
	}
	p.used += n
	return nil
}

func (p *parser) skipSpace() (byte, error) {
	for {
		b, err := p.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			return b, nil
		}
	}
}

func (p *parser) document() (any, error) {
	if _, err := p.skipSpace(); err != nil {
		return nil, errEmpty
	}
	p.r.UnreadByte()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	if _, ok := v.(float64); ok {
		// A top-level number has consumed the character after it, and
		// parse() rejects trailing input for values that are not enclosed.
		return nil, errInvalid
	}
	return v, nil
}

func (p *parser) value() (any, error) {
	b, err := p.skipSpace()
	if err != nil {
		return nil, errIncomplete
	}
	switch {
	case b == '{':
		return p.object()
	case b == '[':
		return p.array()
	case b == '"' || b == '\'':
		s, err := p.str(b)
		if err != nil {
			return nil, err
		}
		return s, p.alloc(len(s) + 1)
	case b == 't' || b == 'f' || b == 'n':
		word := map[byte]string{'t': "rue", 'f': "alse", 'n': "ull"}[b]
		for i := 0; i < len(word); i++ {
			c, err := p.r.ReadByte()
			if err != nil {
				return nil, errIncomplete
			}
			if c != word[i] {
				return nil, errInvalid
			}
		}
		return map[byte]any{'t': true, 'f': false, 'n': nil}[b], nil
	case b == '-' || b == '.' || b >= '0' && b <= '9':
		num := []byte{b}
		for {
			c, err := p.r.ReadByte()
			if err != nil {
				break
			}
			if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
				p.r.UnreadByte() // inside a container the latch keeps it; document() rejects a bare number
				break
			}
			num = append(num, c)
		}
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil {
			return nil, errInvalid
		}
		return f, nil
	}
	return nil, errInvalid
}

func (p *parser) object() (any, error) {
	if p.depth++; p.depth > 10 {
		return nil, errTooDeep
	}
	defer func() { p.depth-- }()
	obj := map[string]any{}
	b, err := p.skipSpace()
	if err != nil {
		return nil, errIncomplete
	}
	if b == '}' {
		return obj, nil
	}
	p.r.UnreadByte()
	for {
		b, err := p.skipSpace()
		if err != nil {
			return nil, errIncomplete
		}
		if b != '"' && b != '\'' {
			return nil, errInvalid
		}
		key, err := p.str(b)
		if err != nil {
			return nil, err
		}
		if err := p.alloc(len(key) + 1); err != nil { // the key is saved before its slot
			return nil, err
		}
		if err := p.alloc(16); err != nil {
			return nil, err
		}
		if b, err = p.skipSpace(); err != nil {
			return nil, errIncomplete
		} else if b != ':' {
			return nil, errInvalid
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		obj[key] = v
		if b, err = p.skipSpace(); err != nil {
			return nil, errIncomplete
		}
		switch b {
		case ',':
		case '}':
			return obj, nil
		default:
			return nil, errInvalid
		}
	}
}

func (p *parser) array() (any, error) {
	if p.depth++; p.depth > 10 {
		return nil, errTooDeep
	}
	defer func() { p.depth-- }()
	var arr []any
	b, err := p.skipSpace()
	if err != nil {
		return nil, errIncomplete
	}
	if b == ']' {
		return arr, nil
	}
	p.r.UnreadByte()
	for {
		if err := p.alloc(16); err != nil {
			return nil, err
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		if b, err = p.skipSpace(); err != nil {
			return nil, errIncomplete
		}
		switch b {
		case ',':
		case ']':
			return arr, nil
		default:
			return nil, errInvalid
		}
	}
}

// str reads a quoted string; \uXXXX is decoded to UTF-8 as the pool is
// charged for it.
func (p *parser) str(quote byte) (string, error) {
	var sb strings.Builder
	for {
		c, err := p.r.ReadByte()
		if err != nil {
			return "", errIncomplete
		}
		switch c {
		case quote:
			return sb.String(), nil
		case '\\':
			e, err := p.r.ReadByte()
			if err != nil {
				return "", errIncomplete
			}
			switch e {
			case 'n':
				sb.WriteByte('\n')
			case 't':
				sb.WriteByte('\t')
			case 'r':
				sb.WriteByte('\r')
			case 'b':
				sb.WriteByte('\b')
			case 'f':
				sb.WriteByte('\f')
			case 'u':
				var hex [4]byte
				for i := range hex {
					if hex[i], err = p.r.ReadByte(); err != nil {
						return "", errIncomplete
					}
				}
				n, err := strconv.ParseUint(string(hex[:]), 16, 16)
				if err != nil {
					return "", errInvalid
				}
				sb.WriteRune(rune(n))
			default:
				sb.WriteByte(e)
			}
		default:
			sb.WriteByte(c)
		}
	}
}
