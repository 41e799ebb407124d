package bench

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"otabox/appliance/store"
)

func decision(mac string) *store.Event {
	return &store.Event{Time: time.Now(), Client: "10.0.0.7", MAC: mac, Family: "ESP8266", Method: "GET", Endpoint: "firmware",
		Target: "/fw.bin", Decision: "no-update", Status: 304, Image: "fw.bin", Digest: "0123456789abcdef0123456789abcdef", FreeSpace: -1, ChipSize: -1}
}

// BenchmarkStoreDurable: firmware decisions committed with synchronous=FULL
// before each returns, from 1 and 64 devices at once; group commit shares
// one fsync among the concurrent ones. records/s is the figure to read.
func BenchmarkStoreDurable(b *testing.B) {
	for _, par := range []int{1, 64} {
		b.Run(fmt.Sprintf("concurrent=%d", par), func(b *testing.B) {
			s, err := store.Open(b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := (b.N + par - 1) / par
			for w := 0; w < par; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < per; i++ {
						s.Decided(decision(fmt.Sprintf("AA:00:%02X:%02X:%02X:%02X", w, byte(i>>16), byte(i>>8), byte(i))))
					}
				}(w)
			}
			wg.Wait()
			b.ReportMetric(float64(per*par)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkStoreFleetSize: the latency of one durable decision with 1,000
// and with 50,000 devices in the record, 8 devices at once. p50 and p99
// should not grow with the fleet.
func BenchmarkStoreFleetSize(b *testing.B) {
	for _, fleet := range []int{1000, 50000} {
		b.Run(fmt.Sprintf("devices=%d", fleet), func(b *testing.B) {
			s, err := store.Open(b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var wg sync.WaitGroup
			for w := 0; w < 64; w++ { // fill: 64 writers share the commits
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := w; i < fleet; i += 64 {
						s.Decided(decision(fmt.Sprintf("BB:00:00:%02X:%02X:%02X", byte(i>>16), byte(i>>8), byte(i))))
					}
				}(w)
			}
			wg.Wait()
			lat := make([]time.Duration, 0, b.N)
			var mu sync.Mutex
			b.ResetTimer()
			per := (b.N + 7) / 8
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < per; i++ {
						mac := fmt.Sprintf("BB:00:00:%02X:%02X:%02X", byte((i*8+w)%fleet>>16), byte((i*8+w)%fleet>>8), byte((i*8+w)%fleet))
						t := time.Now()
						s.Decided(decision(mac))
						d := time.Since(t)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}(w)
			}
			wg.Wait()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkStoreListings: catalog listings recorded without waiting, as
// the catalog endpoint records them; the figure is how many the one
// writer takes per second (the ceiling on recorded catalog requests/s):
// identical ones (a flood from one client, counted into one row per
// commit), distinct ones (a row each) and ones from a fresh device each
// (a row and a new device each: a fleet's first check-in; past the
// record's 100,000 devices a fresh MAC is counted, not added, so run it
// with -benchtime 100000x or less). cpu-µs/record is the whole process's
// CPU time per record, the writer's nearly all of it.
func BenchmarkStoreListings(b *testing.B) {
	for _, kind := range []string{"identical", "distinct", "fresh-mac"} {
		distinct := kind != "identical"
		b.Run(kind, func(b *testing.B) {
			s, err := store.Open(b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ev := store.Event{Time: time.Now(), Client: "10.0.0.7", Family: "ESP8266", Method: "GET", Endpoint: "catalog",
				Target: "/_catalog?op=list&path=.", Decision: "list", Status: 200, Bytes: 168, FreeSpace: -1, ChipSize: -1}
			b.ResetTimer()
			start, cpu := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				e := ev
				switch kind {
				case "distinct":
					e.Target = "/_catalog?op=list&path=" + strconv.Itoa(i)
				case "fresh-mac":
					// What a device's check-in carries (bench/wrk/devices.lua).
					e.MAC = deviceMAC(int64(i))
					e.Digest, e.SDK, e.FreeSpace, e.ChipSize = fmt.Sprintf("%032x", i), "2.2.2-dev(38a443e)", 4194304, 4194304
				}
				s.Record(&e)
				// Distinct listings wait in a bounded set (8,192) between
				// commits: keep under it, as a writer that never falls
				// behind does. Identical ones are one entry, whatever the rate.
				if distinct && i%1024 == 1023 {
					for s.Health().Written+s.Health().Dropped < int64(i-6144) {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			for s.Health().Written+s.Health().Dropped < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/record")
			if d := s.Health().Dropped; d > 0 {
				b.ReportMetric(float64(d), "dropped")
			}
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
