package httpapi

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

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
	line, rest, _ := strings.Cut(s, "\r\n")
	target, ok := strings.CutSuffix(line[len("GET "):], " HTTP/1.1")
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
	n := strings.Count(rest, "\n") - 1 // header lines (rest ends with the blank one), to size the map and the values once
	h := make(http.Header, n)
	values := make([]string, n) // one array for all values, as textproto does
	var host string
	hosts, closing := 0, false
	for {
		var l string
		l, rest, _ = strings.Cut(rest, "\r\n")
		if l == "" {
			break // the blank line ends the head
		}
		colon := strings.IndexByte(l, ':')
		if colon <= 0 {
			return nil, false
		}
		name, value := l[:colon], strings.Trim(l[colon+1:], " \t") // what textproto trims
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
