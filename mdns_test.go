package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"otabox/appliance/emu"
)

// lan is a throw-away network made of namespaces: a server namespace with
// one veth link per client namespace (shared/spec/mdns.md §3, recipe B).
// No default route anywhere, like an isolated field LAN.
type lan struct {
	t       *testing.T
	server  string
	clients []string
	prefix  string
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newLAN(t *testing.T) *lan {
	if os.Geteuid() != 0 {
		skipOrFail(t, "mDNS tests need root to create network namespaces (ip netns); run make test as root, as CI does")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipOrFail(t, "mDNS tests need iproute2's ip command")
	}
	l := &lan{t: t, prefix: fmt.Sprintf("ob%d", os.Getpid()%100000)}
	l.server = l.prefix + "-srv"
	ip(t, "netns", "add", l.server)
	t.Cleanup(func() {
		for _, ns := range append(l.clients, l.server) {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	ip(t, "-n", l.server, "link", "set", "lo", "up")
	return l
}

// addClient links a new client namespace to the server on 10.99.N.0/24 and
// returns the namespace's name.
func (l *lan) addClient() string {
	t := l.t
	n := len(l.clients) + 1
	ns := fmt.Sprintf("%s-c%d", l.server, n)
	s, c := fmt.Sprintf("%ss%d", l.prefix, n), fmt.Sprintf("%sc%d", l.prefix, n)
	ip(t, "netns", "add", ns)
	l.clients = append(l.clients, ns)
	ip(t, "link", "add", s, "type", "veth", "peer", "name", c)
	ip(t, "link", "set", s, "netns", l.server)
	ip(t, "link", "set", c, "netns", ns)
	ip(t, "-n", l.server, "addr", "add", fmt.Sprintf("10.99.%d.1/24", n), "dev", s)
	ip(t, "-n", ns, "addr", "add", fmt.Sprintf("10.99.%d.2/24", n), "dev", c)
	ip(t, "-n", ns, "link", "set", "lo", "up")
	ip(t, "-n", l.server, "link", "set", s, "up")
	ip(t, "-n", ns, "link", "set", c, "up")
	// No route to 224.0.0.0/4 either: the server's answers and `otabox
	// discover` must pick their interface themselves.
	return ns
}

// inNamespace runs f on an OS thread switched into namespace ns; sockets f
// creates belong to ns. The thread is discarded afterwards.
func inNamespace(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan struct{})
	var setErr error
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			setErr = err
			return
		}
		defer unix.Close(fd)
		if setErr = unix.Setns(fd, unix.CLONE_NEWNET); setErr != nil {
			return
		}
		f()
	}()
	<-done
	if setErr != nil {
		t.Fatalf("setns %s: %v", ns, setErr)
	}
}

// espQuery sends what an ESP's mDNS stack sends (spec §2.1/2.2): a QM
// query from 0.0.0.0:5353 with ID 0, and collects answers for up to 2 s.
// legacy sends instead what lwIP's one-shot resolver sends: a random
// source port and ID, and expects ID and question echoed.
func espQuery(t *testing.T, ns, name string, qtype uint16, mode queryMode) (*dns.Msg, time.Duration) {
	legacy := mode == lwip
	t.Helper()
	var (
		resp *dns.Msg
		took time.Duration
		qerr error
	)
	inNamespace(t, ns, func() {
		laddr := &net.UDPAddr{Port: 5353}
		if legacy {
			laddr.Port = 0
		}
		// The device has one network interface, and its stack sends there.
		ifi, err := lanIface()
		if err != nil {
			qerr = err
			return
		}
		conn, err := net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
		if legacy {
			conn, err = net.ListenUDP("udp4", laddr)
		}
		if err != nil {
			qerr = err
			return
		}
		defer conn.Close()
		if err := ipv4.NewPacketConn(conn).SetMulticastInterface(ifi); err != nil {
			qerr = err
			return
		}
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		if mode == qu {
			q.Question[0].Qclass |= 0x8000 // ESP-IDF asks everything but PTR as QU
		}
		q.RecursionDesired = legacy
		q.Id = 0
		if legacy {
			q.Id = 0xBEEF
		}
		out, _ := q.Pack()
		start := time.Now()
		if _, err := conn.WriteToUDP(out, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}); err != nil {
			qerr = err
			return
		}
		buf := make([]byte, 9000)
		conn.SetReadDeadline(start.Add(2 * time.Second))
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				qerr = fmt.Errorf("no answer within 2 s: %w", err)
				return
			}
			var m dns.Msg
			if m.Unpack(buf[:n]) != nil || !m.Response || len(m.Answer) == 0 {
				continue // our own query looped back, or noise
			}
			resp, took = &m, time.Since(start)
			return
		}
	})
	if qerr != nil {
		t.Fatalf("query %s from %s: %v", name, ns, qerr)
	}
	return resp, took
}

// lanIface is the calling namespace's one non-loopback interface.
func lanIface() (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagLoopback == 0 && ifs[i].Flags&net.FlagUp != 0 {
			return &ifs[i], nil
		}
	}
	return nil, fmt.Errorf("no interface up")
}

type queryMode int

const (
	qm   queryMode = iota // ESP8266 LEAmDNS and ESP-IDF PTR queries
	qu                    // ESP-IDF A queries (MDNS.queryHost)
	lwip                  // lwIP's one-shot resolver (WiFi.hostByName("x.local"))
)

// syncLog collects a child's stderr for concurrent reading.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// records sorts an answer into what a device reads from it.
type records struct {
	ptr, srvTarget string
	port           int
	a              []string
	txt            map[string]string
}

func parse(m *dns.Msg) records {
	r := records{txt: map[string]string{}}
	for _, rr := range append(m.Answer, m.Extra...) {
		switch v := rr.(type) {
		case *dns.PTR:
			r.ptr = v.Ptr
		case *dns.SRV:
			r.srvTarget, r.port = v.Target, int(v.Port)
		case *dns.A:
			r.a = append(r.a, v.A.String())
		case *dns.TXT:
			for _, kv := range v.Txt {
				k, val, _ := strings.Cut(kv, "=")
				r.txt[k] = val
			}
		}
	}
	return r
}

func TestMDNSDiscovery(t *testing.T) {
	l := newLAN(t)
	c1 := l.addClient()
	c2 := l.addClient()

	srv := exec.Command("ip", "netns", "exec", l.server, otabox, "serve", "--data-dir", t.TempDir(), "--port", "8000", "--mdns-name", "otabox-nstest", "--mdns-path", "lab", "--log", "debug")
	log := &syncLog{}
	srv.Stderr = log
	started := time.Now()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for i := 0; !strings.Contains(log.String(), "mdns: advertising") || strings.Count(log.String(), "mdns: advertising") < 2; i++ {
		if i > 100 {
			t.Fatalf("otabox did not advertise on both links:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A fresh otabox is found by an ESP-style query within two seconds
	// (espQuery fails the test if no answer comes within 2 s).
	espQuery(t, c1, "_acupdate._tcp.local.", dns.TypePTR, qm)
	t.Logf("first ESP-style query answered %v after the process started", time.Since(started))

	for i, ns := range []string{c1, c2} {
		own := fmt.Sprintf("10.99.%d.1", i+1)
		for _, name := range []string{"_acupdate._tcp.local.", "_ACUpdate._tcp.local."} {
			t.Run(ns+"/"+name, func(t *testing.T) {
				m, took := espQuery(t, ns, name, dns.TypePTR, qm)
				r := parse(m)
				t.Logf("answer in %v: %+v", took, r)
				if r.ptr != "otabox-nstest._acupdate._tcp.local." || r.srvTarget != "otabox-nstest.local." || r.port != 8000 {
					t.Errorf("PTR %q SRV %q:%d", r.ptr, r.srvTarget, r.port)
				}
				if strings.Join(r.a, ",") != own {
					t.Errorf("A records %v, want only this link's %s", r.a, own)
				}
				if r.txt["txtvers"] != "1" || r.txt["path"] != "lab" || r.txt["proto"] != "http" || r.txt["ver"] == "" {
					t.Errorf("TXT %v", r.txt)
				}
			})
		}
		t.Run(ns+"/host A, QU as ESP32 queryHost", func(t *testing.T) {
			m, _ := espQuery(t, ns, "otabox-nstest.local.", dns.TypeA, qu)
			if r := parse(m); strings.Join(r.a, ",") != own {
				t.Errorf("A %v", r.a)
			}
		})
		t.Run(ns+"/legacy unicast as lwIP hostByName", func(t *testing.T) {
			m, _ := espQuery(t, ns, "otabox-nstest.local.", dns.TypeA, lwip)
			if m.Id != 0xBEEF || len(m.Question) != 1 || m.Question[0].Name != "otabox-nstest.local." {
				t.Errorf("id %x question %v: lwIP would drop this", m.Id, m.Question)
			}
		})
		var ifname string
		inNamespace(t, ns, func() {
			if ifi, err := lanIface(); err == nil {
				ifname = ifi.Name
			}
		})
		// Both ways, on a LAN with no route to 224.0.0.0/4 (the field case).
		for _, args := range [][]string{{"discover", "--timeout", "1s"}, {"discover", "--timeout", "1s", "--iface", ifname}} {
			t.Run(ns+"/otabox "+strings.Join(args, " "), func(t *testing.T) {
				out, err := exec.Command("ip", append([]string{"netns", "exec", ns, otabox}, args...)...).CombinedOutput()
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				for _, want := range []string{"otabox-nstest", "host=otabox-nstest.local.", "addrs=" + own + "\t", "port=8000", "path=lab", "proto=http", "txtvers=1"} {
					if !strings.Contains(string(out), want) {
						t.Errorf("discover output lacks %q:\n%s", want, out)
					}
				}
			})
		}
	}

	t.Run("interface that comes up later", func(t *testing.T) {
		c3 := l.addClient()
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(log.String(), "10.99.3.1") {
			if time.Now().After(deadline) {
				t.Fatalf("new link never advertised:\n%s", log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		m, _ := espQuery(t, c3, "_acupdate._tcp.local.", dns.TypePTR, qm)
		if r := parse(m); strings.Join(r.a, ",") != "10.99.3.1" {
			t.Errorf("A %v", r.a)
		}
	})
}

// TestMDNSUnavailable: with port 5353 taken, or no LAN interface, otabox
// warns and serves devices all the same.
func TestMDNSUnavailable(t *testing.T) {
	l := newLAN(t)
	for _, tc := range []struct {
		name, warning string
		hold5353      bool
	}{
		{"no LAN interface", "no LAN interface is up", false},
		{"port 5353 taken", "cannot open UDP :5353", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hold5353 {
				inNamespace(t, l.server, func() {
					c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: 5353}) // no SO_REUSEADDR: exclusive
					if err != nil {
						t.Error(err)
						return
					}
					t.Cleanup(func() { c.Close() })
				})
			}
			log := &syncLog{}
			srv := exec.Command("ip", "netns", "exec", l.server, otabox, "serve", "--data-dir", t.TempDir(), "--port", "8000")
			srv.Stderr = log
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { srv.Process.Kill(); srv.Wait() }()
			for i := 0; !strings.Contains(log.String(), tc.warning); i++ {
				if i > 100 {
					t.Fatalf("no warning %q:\n%s", tc.warning, log.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			var got string
			inNamespace(t, l.server, func() {
				d := emu.New(emu.ESP8266v31)
				got = d.Catalog("127.0.0.1:8000", ".").Caption
			})
			if got != "Available firmwares" {
				t.Errorf("devices not served: %q\n%s", got, log.String())
			}
		})
	}
}

// TestFactoryBenchOverMDNS: five boards, each on its own link of a
// namespace LAN, find otabox the way the provisioning sketch does
// (MDNS.queryService("acupdate", "tcp")), take the batch image and confirm
// it after the reboot.
func TestFactoryBenchOverMDNS(t *testing.T) {
	l := newLAN(t)
	var clients []string
	for i := 0; i < 5; i++ {
		clients = append(clients, l.addClient())
	}
	dir, prod, sketch := benchCatalog(t)
	data := t.TempDir()
	if _, err := otaboxCmd(t, "batch", "start", "tray-m", "--image", "prod.bin", "--expect", "5", "--catalog", dir, "--data-dir", data); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", l.server, otabox, "serve", "--catalog", dir, "--data-dir", data, "--port", "8000", "--mdns-name", "otabox-bench")
	log := &syncLog{}
	srv.Stderr = log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for i := 0; strings.Count(log.String(), "mdns: advertising") < len(clients); i++ {
		if i > 200 {
			t.Fatalf("otabox did not advertise on every link:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for i, ns := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inNamespace(t, ns, func() {
				ifi, err := lanIface()
				if err != nil {
					t.Error(err)
					return
				}
				svc, err := emu.QueryService(ifi, time.Second, time.Second, time.Now().Add(15*time.Second))
				if err != nil {
					t.Errorf("%s: %v", ns, err)
					return
				}
				if want := fmt.Sprintf("10.99.%d.1:8000", i+1); svc.Addr() != want || svc.Host != "otabox-bench.local." {
					t.Errorf("%s found %s (%s), want %s", ns, svc.Addr(), svc.Host, want)
				}
				b := emu.NewProvisioner(emu.ESP8266v31, macN("5C:CF:7F", 0x900+i))
				b.Running = sketch
				p := b.Provision(svc.Addr(), "/update", true)
				if p.Update.Outcome != emu.OK || p.CheckIn == nil || p.CheckIn.Outcome != emu.NoUpdates || !bytes.Equal(p.Update.Image, prod) {
					t.Errorf("%s: update %v, check-in %v", ns, p.Update, p.CheckIn)
				}
			})
		}()
	}
	wg.Wait()
	out, err := otaboxCmd(t, "report", "tray-m", "--format", "csv", "--data-dir", data)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, ",confirmed,"); n != 5 {
		t.Errorf("%d boards confirmed in the report, want 5:\n%s", n, out)
	}
}
