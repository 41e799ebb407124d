package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWriterSeesOtherWriters: the writer keeps the device rows it wrote
// in memory (rowCache); a change another connection commits in between
// (otabox retry from a shell, otabox flash recording a board) is what
// the writer's next transaction starts from, not its memory.
func TestWriterSeesOtherWriters(t *testing.T) {
	t.Run("otabox retry between two failures", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := open(t, dir, Options{})
		fail := func() {
			s.do(request{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 10, size: 10})
			s.do(request{mac: "A", decision: "refuse", digest: "old", image: "fw.bin"})
		}
		fail()
		if d := device(t, s, "A"); d.Failures != 1 {
			t.Fatalf("after one failed update: %+v", d)
		}
		if known, err := Retry(dir, "A"); err != nil || !known {
			t.Fatalf("Retry from outside: %v %v", known, err)
		}
		fail()
		if d := device(t, s, "A"); d.Failures != 1 || !d.HeldUntil.IsZero() {
			t.Errorf("after the retry and one more failure: failures %d, held until %v; want 1, not held (the writer used its memory of the row)", d.Failures, d.HeldUntil)
		}
	})
	t.Run("boards flashed over USB count against MaxDevices", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := open(t, dir, Options{MaxDevices: 3})
		for i := 0; i < 2; i++ {
			s.do(request{mac: fmt.Sprintf("AA:00:00:00:00:%02X", i), decision: "refuse", image: "fw.bin"})
		}
		device(t, s, "AA:00:00:00:00:01")
		if err := RecordFlashed(dir, "", []Flashed{{Time: time.Now(), Slot: "1", MAC: "AA:00:00:00:01:00", Family: "ESP32", Image: "fw.bin", Passed: true, FlashSize: -1}}); err != nil {
			t.Fatal(err)
		}
		s.do(request{mac: "AA:00:00:00:00:09", decision: "refuse", image: "fw.bin"})
		s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"}) // a known one: written, and waited for
		device(t, s, "AA:00:00:00:00:01")
		if c, _ := s.Counts(context.Background()); c.Devices != 3 {
			t.Errorf("%d devices, want the bound of 3 (two served, one flashed over USB)", c.Devices)
		}
	})
}

// TestWriterKnowsDevicesOthersAdded: the writer does not look for a MAC
// it has never seen in the table, so a device another connection added
// (a board flashed over USB) must be known to it: its next request
// updates that row instead of starting a new one over it.
func TestWriterKnowsDevicesOthersAdded(t *testing.T) {
	for _, mac := range []string{"AA:00:00:00:01:00", "aa:00:00:00:01:00", "bench-7"} {
		t.Run(mac, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := open(t, dir, Options{})
			s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"}) // the writer's cache is filled
			device(t, s, "AA:00:00:00:00:01")
			flashed := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
			if err := RecordFlashed(dir, "", []Flashed{{Time: flashed, Slot: "1", MAC: mac, Family: "ESP32", Image: "fw.bin", Passed: true, FlashSize: -1}}); err != nil {
				t.Fatal(err)
			}
			s.do(request{mac: mac, decision: "refuse", image: "fw.bin"})
			d := device(t, s, mac)
			if !d.FirstSeen.Equal(flashed) || d.Requests < 2 {
				t.Errorf("after a request: first seen %v, %d requests; want %v (flashed over USB) and the flash counted", d.FirstSeen, d.Requests, flashed)
			}
		})
	}
}

// TestStatementsNamingDevicesSeeSavedRows: the writer writes the device
// rows a transaction saved at its end, several to a statement; a
// statement that names the devices table before then finds them written.
func TestStatementsNamingDevicesSeeSavedRows(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	var affected int64
	err := s.inTx(func(tx wtx) error {
		for i := 0; i < upsertRows+3; i++ {
			if err := saveDevice(tx, &row{Device: Device{MAC: fmt.Sprintf("AA:00:00:00:00:%02X", i), Failures: 2, FirstSeen: time.Now()}}); err != nil {
				return err
			}
		}
		res, err := tx.Exec(`UPDATE devices SET failures = 0 WHERE failures = 2`)
		if err != nil {
			return err
		}
		affected, err = res.RowsAffected()
		return err
	})
	if err != nil || affected != upsertRows+3 {
		t.Fatalf("the UPDATE changed %d rows (%v), want the %d saved before it", affected, err, upsertRows+3)
	}
	if c, _ := s.Counts(context.Background()); c.Devices != upsertRows+3 {
		t.Errorf("%d devices after the commit, want %d", c.Devices, upsertRows+3)
	}
}

// TestNamesDevices: which statements see the device rows the writer kept
// back (writeBefore).
func TestNamesDevices(t *testing.T) {
	for q, want := range map[string]bool{
		`UPDATE devices SET failures = 0`:                                       true,
		`SELECT count(*) FROM devices`:                                          true,
		"SELECT mac FROM\ndevices":                                              true,
		`INSERT OR REPLACE INTO batch_devices (batch) VALUES (?)`:               false,
		`UPDATE events SET finished = 1 WHERE devices_x = 0`:                    false,
		`SELECT n FROM commits`:                                                 false,
		`UPDATE batch_devices SET x = 1 WHERE mac IN (SELECT mac FROM devices)`: true,
	} {
		if got := names(q, "devices"); got != want {
			t.Errorf("names(%q, devices) = %v, want %v", q, got, want)
		}
	}
}

// FuzzMACNumber: a MAC kept as a number is the one string that number
// spells, so two MACs never share a number.
func FuzzMACNumber(f *testing.F) {
	for _, s := range []string{"5C:CF:7F:12:34:56", "5c:cf:7f:12:34:56", "00:00:00:00:00:00", "FF:FF:FF:FF:FF:FF", "5C-CF-7F-12-34-56", "A", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, mac string) {
		n, ok := macNumber(mac)
		if !ok {
			return
		}
		b := make([]string, 6)
		for i := range b {
			b[i] = fmt.Sprintf("%02X", byte(n>>(40-8*i)))
		}
		if back := strings.Join(b, ":"); back != mac || n>>48 != 0 {
			t.Fatalf("macNumber(%q) = %#x, which spells %q", mac, n, back)
		}
	})
}

// TestHoldKnowsBoardsFlashedBesideTheServer: Hold answers a device the
// writer has never seen without a query, so a board that otabox flash
// (another process) records while the server has nothing to write must
// still become known to it: within the writer's next tick.
func TestHoldKnowsBoardsFlashedBesideTheServer(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"})
	device(t, s, "AA:00:00:00:00:01")
	const board = "AA:00:00:00:02:00"
	if h := s.Hold(context.Background(), board); h.State != "" {
		t.Fatalf("before the flash: %+v", h)
	}
	if err := RecordFlashed(dir, "", []Flashed{{Time: time.Now(), Slot: "1", MAC: board, Family: "ESP32", Image: "fw.bin", Digests: []string{"d1"}, Passed: true, FlashSize: -1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		h := s.Hold(context.Background(), board)
		if h.State == StateSent && len(h.SentDigests) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 s after the flash, Hold says %+v; want the board sent d1", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// values is a scanner of one row's values, in deviceCols order.
type values [deviceColumns]any

func (v values) Scan(dest ...any) error {
	for i, d := range dest {
		switch d := d.(type) {
		case *string:
			*d = v[i].(string)
		case *int64:
			*d = int64(v[i].(int))
		case *bool:
			*d = v[i].(int) != 0
		default:
			return fmt.Errorf("column %d: %T", i, d)
		}
	}
	return nil
}

// TestEveryChangedColumnIsWritten: a known device's row is written as an
// UPDATE of the columns that changed; each column, changed alone, reaches
// the database.
func TestEveryChangedColumnIsWritten(t *testing.T) {
	if len(deviceNames) != deviceColumns {
		t.Fatalf("deviceCols names %d columns, deviceColumns says %d", len(deviceNames), deviceColumns)
	}
	const mac = "AA:00:00:00:00:01"
	var was, next values
	for i := range was {
		switch {
		case i == 0:
			was[i], next[i] = mac, mac
		case i == deviceColumns-1: // pending_fs
			was[i], next[i] = 0, 1
		default:
			was[i], next[i] = fmt.Sprint(i), fmt.Sprint(i+100)
		}
	}
	// Numbers where the row holds numbers.
	for _, name := range []string{"first_seen", "last_seen", "sent_at", "requests", "downloads", "failures", "held_until", "pending_event", "fs_at"} {
		i := slices.Index(deviceNames, name)
		was[i], next[i] = 1_000_000+i, 2_000_000+i
	}
	row := func(v values) *row {
		r, err := scanDevice(v)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for i := 1; i < deviceColumns; i++ {
		t.Run(deviceNames[i], func(t *testing.T) {
			s, _ := open(t, t.TempDir(), Options{})
			if err := s.inTx(func(tx wtx) error { return saveDevice(tx, row(was)) }); err != nil {
				t.Fatal(err)
			}
			want := was
			want[i] = next[i]
			err := s.inTx(func(tx wtx) error {
				if _, found, err := loadDevice(tx, mac); err != nil || !found {
					return fmt.Errorf("the row just written: found %v, %v", found, err)
				}
				return saveDevice(tx, row(want))
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := scanDevice(s.db.Load().QueryRow(`SELECT `+deviceCols+` FROM devices WHERE mac = ?`, mac))
			if err != nil {
				t.Fatal(err)
			}
			if g := deviceValues(got); g != deviceValues(row(want)) {
				t.Errorf("the database holds\n%v\nwant\n%v", g, deviceValues(row(want)))
			}
		})
	}
}

// TestListingsKeptBackKeepTheirOrder: the writer keeps a device's
// listing back to insert it with others; the events still go in in the
// order they came, around a decision whose id is needed at once.
func TestListingsKeptBackKeepTheirOrder(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	ev := func(target string) *Event {
		return &Event{Time: time.Now(), Client: "127.0.0.1", MAC: "AA:00:00:00:00:01", Family: "ESP8266", Method: "GET", Endpoint: "catalog", Target: target, Status: 200, FreeSpace: -1, ChipSize: -1}
	}
	var order []string
	for i := 0; i < listingRows+2; i++ {
		order = append(order, fmt.Sprintf("/listing-%d", i))
	}
	order = slices.Insert(order, 3, "/decision")
	err := s.inTx(func(tx wtx) error {
		for _, target := range order {
			e, decided := ev(target), target == "/decision"
			if decided {
				e.Endpoint, e.Decision, e.Image = "firmware", "no-update", "fw.bin"
			}
			id, err := s.insert(tx, e, decided)
			if err != nil {
				return err
			}
			if decided && id != 4 {
				return fmt.Errorf("the decision's id is %d, want 4 (after three listings)", id)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.db.Load().Query(`SELECT target FROM events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var target string
		rows.Scan(&target)
		got = append(got, target)
	}
	if !slices.Equal(got, order) {
		t.Errorf("events in id order:\n%v\nwant\n%v", got, order)
	}
}

// TestHoldSeesOtaboxRetryFromAShell: a retry from another process lifts
// the hold-back at once: Hold never answers a known device from the
// writer's memory.
func TestHoldSeesOtaboxRetryFromAShell(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	const mac = "AA:00:00:00:00:08"
	whole := request{mac: mac, decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 100, size: 100}
	for i := 0; i < 3; i++ {
		s.do(whole)
		device(t, s, mac)
	}
	if h := s.Hold(context.Background(), mac); h.Failures == 0 || h.Until.IsZero() {
		t.Fatalf("after the failures: %+v, want held back", h)
	}
	if known, err := Retry(dir, mac); err != nil || !known {
		t.Fatalf("Retry: %v %v", known, err)
	}
	if h := s.Hold(context.Background(), mac); h.Failures != 0 || !h.Until.IsZero() {
		t.Errorf("right after the retry: %+v, want no failures, not held", h)
	}
}

// TestWALDeletedAndMadeAgainIsSeen: after the WAL is deleted, a
// connection opened since makes a new, empty file of that name, while the
// writer goes on writing into the deleted one. The writer knows its WAL
// by identity: it still says so, saves what SQLite holds and loses
// nothing.
func TestWALDeletedAndMadeAgainIsSeen(t *testing.T) {
	dir := t.TempDir()
	s, logs := open(t, dir, Options{})
	mac := func(i int) string { return fmt.Sprintf("AA:00:00:00:03:%02X", i) }
	for i := 0; i < 10; i++ {
		s.do(request{mac: mac(i), decision: "refuse", image: "fw.bin"})
	}
	wal := s.Path() + "-wal"
	if err := os.Remove(wal); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", dsn(s.Path(), true))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	other.QueryRow(`SELECT count(*) FROM devices`).Scan(&n)
	other.Close()
	if _, err := os.Stat(wal); err != nil {
		t.Skipf("no connection made the WAL again (%v): the case this test is for did not arise", err)
	}
	for i := 10; i < 20; i++ {
		s.do(request{mac: mac(i), decision: "refuse", image: "fw.bin"})
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "WAL was deleted while otabox runs"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no word of the deleted WAL within 5 s:\n%s", logs)
		}
	}
	s.Close()
	s2, _ := open(t, dir, Options{})
	for i := 0; i < 20; i++ {
		device(t, s2, mac(i))
	}
}
