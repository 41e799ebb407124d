package httpapi

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"

	"golang.org/x/net/http/httpguts"
)

// parseListing parses a catalog request head as devices send it: an
// HTTP/1.1 GET of /_catalog, CRLF line ends, one Host, plain header
// lines. It returns the request http.ReadRequest would return for the
// same bytes (FuzzParseListingAgreesWithNetHTTP), with base's context,
// and false for any head outside that plain form, which the caller
// leaves to http.ReadRequest. It costs a listing a third of what
// http.ReadRequest does: one string for the whole head, of which every
// name and value is a part, and no textproto.Reader.
//
// Left to http.ReadRequest: bare LF line ends, folded lines, bytes
// outside printable ASCII, a target other than /_catalog with a plain
// query, and every header that changes how the request is framed or
// read (Content-Length other than one "0", Transfer-Encoding, Trailer,
// Expect, Upgrade, Pragma).
func parseListing(head []byte, base *http.Request) (*http.Request, bool) {
	const prefix = "GET " + CatalogPath
	if !bytes.HasPrefix(head, []byte(prefix)) || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return nil, false
	}
	s := string(head) // every string below is a part of this one
	line, rest, _ := cutCRLF(s)
	target, ok := cutSuffix(line[len("GET "):], " HTTP/1.1")
	if !ok {
		return nil, false
	}
	u := &url.URL{Path: CatalogPath}
	switch q := target[len(CatalogPath):]; {
	case q == "":
	case q == "?":
		u.ForceQuery = true
	case q[0] == '?' && plainQuery(q[1:]):
		u.RawQuery = q[1:]
	default:
		return nil, false
	}
	n := 0 // header lines, to size the map and the values once
	for i := 0; i+1 < len(rest); i++ {
		if rest[i] == '\n' {
			n++
		}
	}
	h := make(http.Header, n)
	values := make([]string, n) // one array for all values, as textproto does
	var host string
	hosts, closing := 0, false
	for {
		var l string
		l, rest, _ = cutCRLF(rest)
		if l == "" {
			break // the blank line ends the head
		}
		colon := indexByte(l, ':')
		if colon <= 0 {
			return nil, false
		}
		name, value := l[:colon], trimSpaceTab(l[colon+1:])
		if !httpguts.ValidHeaderFieldName(name) || !plainValue(value) {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			if hosts++; !httpguts.ValidHostHeader(value) {
				return nil, false
			}
			host = value
			continue // http.ReadRequest takes Host out of the header
		case "Content-Length": // the ESP8266 core sends "0" with every GET
			if value != "0" || h[key] != nil {
				return nil, false
			}
		case "Transfer-Encoding", "Trailer", "Expect", "Upgrade", "Pragma":
			return nil, false
		case "Connection":
			closing = closing || httpguts.HeaderValuesContainsToken([]string{value}, "close")
		}
		if vv := h[key]; vv == nil && len(values) > 0 {
			values[0] = value
			h[key], values = values[:1:1], values[1:]
		} else {
			h[key] = append(vv, value)
		}
	}
	if hosts != 1 {
		return nil, false
	}
	r := new(http.Request)
	*r = *base // its context, copied rather than made per request by WithContext
	r.Method, r.URL, r.Proto, r.ProtoMajor, r.ProtoMinor = http.MethodGet, u, "HTTP/1.1", 1, 1
	r.Header, r.Host, r.RequestURI, r.Close, r.Body = h, host, target, closing, http.NoBody
	return r, true
}

// cutCRLF splits s at its first CRLF.
func cutCRLF(s string) (line, rest string, ok bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '\r' && s[i+1] == '\n' {
			return s[:i], s[i+2:], true
		}
	}
	return s, "", false
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) < len(suffix) || s[len(s)-len(suffix):] != suffix {
		return s, false
	}
	return s[:len(s)-len(suffix)], true
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// trimSpaceTab trims what textproto trims around a header value.
func trimSpaceTab(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// plainQuery: printable ASCII, without the bytes url.ParseRequestURI
// treats apart ('?' and '#') or a space.
func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c > '~' || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

// plainValue: printable ASCII, spaces and tabs.
func plainValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c > '~' {
			return false
		}
	}
	return true
}
