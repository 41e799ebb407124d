package httpapi

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// FuzzCatalogQuery: catalogQuery reads every query as url.ParseQuery
// does: the same first op and path, and the same error (or none).
func FuzzCatalogQuery(f *testing.F) {
	for _, s := range []string{
		"op=list&path=.", "op=list&path=lab/deeper", "path=%2e&op=list", "op=list&op=other&path=a&path=b",
		"op=list&path=%zz", "op=%zz;x&path=.", "op=list;path=.", "a=%zz&b=;&op=list", "a=;&b=%zz",
		"op=li+st&path=a%20b", "=x&&op&path", "op=list&" + strings.Repeat("x&", 70) + "path=.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		op, path, err := catalogQuery(raw)
		q, want := url.ParseQuery(raw)
		if op != q.Get("op") || path != q.Get("path") || fmt.Sprint(err) != fmt.Sprint(want) {
			t.Fatalf("%q: catalogQuery %q %q %v; url.ParseQuery %q %q %v", raw, op, path, err, q.Get("op"), q.Get("path"), want)
		}
	})
}
