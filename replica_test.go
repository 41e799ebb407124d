package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"golang.org/x/crypto/ssh"

	"otabox/appliance/emu"
)

// fleetTraffic is devices taking their update, eight at a time, until
// stop: each one's MAC and when its last byte arrived, for those that
// received the whole image.
type fleetTraffic struct {
	mu        sync.Mutex
	completed map[string]time.Time
	stop      chan struct{}
	wg        sync.WaitGroup
}

func startTraffic(addr string, v1, v2 []byte, first int) *fleetTraffic {
	ft := &fleetTraffic{completed: map[string]time.Time{}, stop: make(chan struct{})}
	want := md5hex(v2)
	var mu sync.Mutex
	next := 0
	for c := 0; c < 8; c++ {
		ft.wg.Add(1)
		go func() {
			defer ft.wg.Done()
			for {
				select {
				case <-ft.stop:
					return
				default:
				}
				d := emu.New(emu.ESP8266v31)
				d.Running = v1
				mu.Lock()
				next++
				d.STAMAC = macN("5C:CF:7F", first+next)
				mu.Unlock()
				conn, br, got := startBody(addr, d, "/meter-1.1.0.bin")
				if got {
					body := make([]byte, len(v2))
					if n, _ := io.ReadFull(br, body); n == len(v2) && md5hex(body) == want {
						ft.mu.Lock()
						ft.completed[d.STAMAC] = time.Now()
						ft.mu.Unlock()
					}
				}
				if conn != nil {
					conn.Close()
				}
			}
		}()
	}
	return ft
}

func (ft *fleetTraffic) end() {
	close(ft.stop)
	ft.wg.Wait()
}

// completedBefore is the MACs whose download completed before t.
func (ft *fleetTraffic) completedBefore(t time.Time) []string {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	var macs []string
	for mac, at := range ft.completed {
		if at.Before(t) {
			macs = append(macs, mac)
		}
	}
	return macs
}

type replicaState struct {
	Streaming  bool   `json:"streaming"`
	LocalTXID  uint64 `json:"local_txid"`
	RemoteTXID uint64 `json:"remote_txid"`
	Degraded   string `json:"degraded"`
	Errors     int64  `json:"errors"`
}

func replicaOf(t *testing.T, r *running) replicaState {
	t.Helper()
	var st replicaState
	if err := json.Unmarshal([]byte(getBody(t, "http://"+r.addr+"/api/replica")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// inSync waits until the replica holds every transaction committed
// before it was called, and returns when it was called. Litestream reads
// the WAL once a second, so the record's position is taken 1.5 s later.
func inSync(t *testing.T, r *running, within time.Duration) time.Time {
	t.Helper()
	asked := time.Now()
	time.Sleep(1500 * time.Millisecond)
	want := replicaOf(t, r).LocalTXID
	deadline := time.Now().Add(within)
	for {
		st := replicaOf(t, r)
		if st.Streaming && want > 0 && st.RemoteTXID >= want {
			return asked
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not reach transaction %d within %s: %+v", want, within, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKeepTheRecordSafeOnAUSBStick: the README's "Keep the record safe":
// serve --replicate file:///..., devices update, otabox is killed -9 in
// the middle of their traffic, and otabox restore onto a fresh data dir
// brings back every device whose download completed before the replica's
// last sync. The window (downloads completed after it, and how many of
// those the replica had all the same) is measured and logged.
func TestKeepTheRecordSafeOnAUSBStick(t *testing.T) {
	t.Parallel()
	dir, v1, v2, _ := fleetCatalog(t)
	usb := "file://" + filepath.Join(t.TempDir(), "usb", "otabox")
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir, "--replicate", usb, "--log", "warn")
	ft := startTraffic(r.addr, v1, v2, 0x10000)
	time.Sleep(1500 * time.Millisecond)
	synced := inSync(t, r, 15*time.Second)
	time.Sleep(700 * time.Millisecond) // traffic after the last sync seen: the window
	killed := time.Now()
	kill9(r)
	ft.end()

	fresh := t.TempDir()
	out, err := otaboxCmd(t, "restore", usb, "--data-dir", fresh)
	if err != nil || !strings.Contains(out, "restored the fleet record from "+usb) {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	have := recorded(t, fresh)
	must := ft.completedBefore(synced)
	if len(must) < 10 {
		t.Fatalf("only %d downloads completed before the sync: the test did not exercise the record", len(must))
	}
	for _, mac := range must {
		if _, ok := have[mac]; !ok {
			t.Errorf("%s completed its download before the replica's last sync and is not in the restored record", mac)
		}
	}
	after, kept := 0, 0
	firstLost := killed
	for _, mac := range ft.completedBefore(killed) {
		at := ft.completed[mac]
		if at.Before(synced) {
			continue
		}
		after++
		if _, ok := have[mac]; ok {
			kept++
		} else if at.Before(firstLost) {
			firstLost = at
		}
	}
	t.Logf("%d downloads completed before the last sync seen, all restored; %d completed in the %s between it and the kill -9, %d of them in the replica all the same: the restore lacks only downloads completed in the last %s before the kill; %d devices in the restored record",
		len(must), after, killed.Sub(synced).Round(time.Millisecond), kept, killed.Sub(firstLost).Round(time.Millisecond), len(have))
}

// TestRestoreNeverReplacesARecordUnasked: otabox restore refuses a data
// dir that holds a record unless --force, and even with --force while a
// server has it open; with --force the old record is moved aside whole
// (still readable), never deleted. A replica that holds nothing says so.
func TestRestoreNeverReplacesARecordUnasked(t *testing.T) {
	t.Parallel()
	dir, _, v2, _ := fleetCatalog(t)
	usb := "file://" + filepath.Join(t.TempDir(), "usb")
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir, "--replicate", usb, "--log", "warn")
	checkIns(t, r.addr, 0x100, 3, v2)
	inSync(t, r, 15*time.Second)

	before, _ := os.ReadFile(filepath.Join(data, "otabox.db"))
	if out, code := run(t, "restore", usb, "--data-dir", data); code != 1 || !strings.Contains(out, "already holds a fleet record: give --force") {
		t.Errorf("restore over a record: rc %d\n%s", code, out)
	}
	if out, code := run(t, "restore", usb, "--data-dir", data, "--force"); code != 1 || !strings.Contains(out, "an otabox server has this data dir open: stop it first") {
		t.Errorf("restore --force under a running server: rc %d\n%s", code, out)
	}
	if after, _ := os.ReadFile(filepath.Join(data, "otabox.db")); string(after) != string(before) {
		t.Error("a refused restore changed the record")
	}
	checkIns(t, r.addr, 0x200, 2, v2) // two more, which the stop ships
	r.cmd.Process.Signal(syscall.SIGTERM)
	if log, err := waitExit(r); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	out, err := otaboxCmd(t, "restore", usb, "--data-dir", data, "--force")
	if err != nil || !strings.Contains(out, "the replica held them all") || !strings.Contains(out, "is kept in ") {
		t.Fatalf("restore --force: %v\n%s", err, out)
	}
	aside, _ := filepath.Glob(filepath.Join(data, "replaced-*"))
	if len(aside) != 1 {
		t.Fatalf("the replaced record was not kept aside: %v", aside)
	}
	if old, restored := recorded(t, aside[0]), recorded(t, data); len(old) != 5 || len(restored) != 5 {
		t.Errorf("the record moved aside has %d devices and the restored one %d, want 5 and 5 (the shutdown shipped the last two)", len(old), len(restored))
	}
	empty := "file://" + filepath.Join(t.TempDir(), "nothing")
	if out, code := run(t, "restore", empty, "--data-dir", t.TempDir()); code != 1 || !strings.Contains(out, "the replica holds no fleet record") {
		t.Errorf("restore from an empty replica: rc %d\n%s", code, out)
	}
}

// TestServeRestoresAnEmptyDataDirFirst: a replacement box given the same
// --replicate and an empty data dir restores the record before it serves,
// then goes on streaming it: a device it records is in the next restore.
func TestServeRestoresAnEmptyDataDirFirst(t *testing.T) {
	t.Parallel()
	dir, v1, v2, _ := fleetCatalog(t)
	usb := "file://" + filepath.Join(t.TempDir(), "usb")
	old := startData(t, t.TempDir(), "--catalog", dir, "--replicate", usb, "--log", "warn")
	macs := checkIns(t, old.addr, 0x300, 4, v2)
	inSync(t, old, 15*time.Second)
	kill9(old) // the SD card dies

	box := t.TempDir()
	r := startData(t, box, "--catalog", dir, "--replicate", usb)
	waitLog(t, r, "restored the fleet record onto this box before serving")
	devs := getBody(t, "http://"+r.addr+"/api/devices")
	for _, mac := range macs {
		if !strings.Contains(devs, mac) {
			t.Errorf("%s is not in the restored box's /api/devices", mac)
		}
	}
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.Running = "5C:CF:7F:03:00:99", v1
	if res := d.Update(r.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK {
		t.Fatalf("update on the new box: %v", res)
	}
	inSync(t, r, 15*time.Second)
	again := t.TempDir()
	if _, err := otaboxCmd(t, "restore", usb, "--data-dir", again); err != nil {
		t.Fatal(err)
	}
	if have := recorded(t, again); len(have) != 5 || have[d.STAMAC].MAC == "" {
		t.Errorf("the next restore has %d devices, want the 4 restored and the new box's one", len(have))
	}
}

// TestReplicateFlagsRefusedWithTheReason: a replica otabox cannot use as
// written is refused at start with one line, before a device is served.
func TestReplicateFlagsRefusedWithTheReason(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "id")
	os.WriteFile(key, []byte("x"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"two replicas", []string{"--replicate", "file:///tmp/a", "--replicate", "file:///tmp/b"}, "the record streams to one replica"},
		{"sftp without the host key", []string{"--replicate", "sftp://otabox@nas/otabox", "--replicate-ssh-key", key}, "the SFTP server's host key is required"},
		{"sftp without a key", []string{"--replicate", "sftp://otabox@nas/otabox", "--replicate-host-key", "ssh-ed25519 AAAA"}, "needs --replicate-ssh-key"},
		{"a scheme it does not take", []string{"--replicate", "ftp://nas/otabox"}, "file://, sftp:// and s3:// URLs"},
		{"a relative folder", []string{"--replicate", "file://usb/otabox"}, "names a local folder"},
		{"no record to replicate", []string{"--data-dir", "", "--replicate", "file:///tmp/a"}, `--data-dir "" keeps none`},
		{"s3 beside AWS_CA_BUNDLE", []string{"--replicate", "s3://bucket/otabox?endpoint=http://127.0.0.1:1"}, "AWS_CA_BUNDLE is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--mdns=false", "-b", "127.0.0.1", "-p", "0", "--data-dir", t.TempDir()}, tc.args...)
			cmd := exec.Command(otabox, args...)
			cmd.Env = append(os.Environ(), "AWS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt")
			b, _ := cmd.CombinedOutput()
			out, code := string(b), cmd.ProcessState.ExitCode()
			if code == 0 || !strings.Contains(out, tc.want) || strings.Contains(out, "msg=serving") {
				t.Errorf("rc %d, want a refusal saying %q:\n%s", code, tc.want, out)
			}
		})
	}
}

// TestUnreadableReplicaHoldsReplicationBack: a box with an empty data dir
// whose replica cannot be read serves devices with a new record but does
// not stream it (that would bury the record the replica may hold), and
// says so: /healthz "degraded", the page's banner, otabox_replica_healthy 0.
func TestUnreadableReplicaHoldsReplicationBack(t *testing.T) {
	t.Parallel()
	dir, v1, _, _ := fleetCatalog(t)
	key := filepath.Join(t.TempDir(), "id")
	os.WriteFile(key, []byte("x"), 0o600)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := l.Addr().String()
	l.Close() // nothing listens there now
	r := startData(t, t.TempDir(), "--catalog", dir, "--replicate", "sftp://otabox@"+gone+"/otabox", "--replicate-ssh-key", key, "--replicate-host-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
	waitLog(t, r, "devices are served with a new record that is not replicated")
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.Running = "5C:CF:7F:04:00:01", v1
	if res := d.Update(r.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK {
		t.Fatalf("a device beside an unreadable replica: %v", res)
	}
	if h := getBody(t, "http://"+r.addr+"/healthz"); !strings.HasPrefix(h, "degraded: replication of the fleet record to sftp://otabox@"+gone+"/otabox is held back") {
		t.Errorf("/healthz: %q", h)
	}
	if m := getBody(t, "http://"+r.addr+"/metrics"); metricValue(m, "otabox_replica_healthy") != 0 {
		t.Error("otabox_replica_healthy is not 0")
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, `id="replica-behind"`) {
		t.Error("the status page has no replica banner")
	}
}

// sshServer is Debian's OpenSSH sshd on a loopback port, with throwaway
// host and user keys, offering SFTP to the user running the test.
type sshServer struct {
	t       *testing.T
	dir     string
	port    int
	hostKey string // authorized_keys form
	userKey string // private key file
	cmd     *exec.Cmd
}

func startSSH(t *testing.T) *sshServer {
	t.Helper()
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/sshd"); e != nil {
			skipOrFail(t, "needs Debian's openssh-server (apt-get install openssh-server)")
		}
		sshd = "/usr/sbin/sshd"
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeKey := func(name string) ssh.PublicKey {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		blk, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(blk), 0o600)
		sp, _ := ssh.NewPublicKey(pub)
		return sp
	}
	host, user := writeKey("host"), writeKey("user")
	os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(user), 0o600)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	os.MkdirAll("/run/sshd", 0o755) // its privilege separation directory
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/host
PidFile %s/sshd.pid
AuthorizedKeysFile %s/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin yes
AllowUsers %s
Subsystem sftp internal-sftp
LogLevel ERROR
`, port, dir, dir, dir, me.Username)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	s := &sshServer{t: t, dir: dir, port: port, hostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(host))), userKey: filepath.Join(dir, "user")}
	if out, err := exec.Command(sshd, "-t", "-f", filepath.Join(dir, "sshd_config")).CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("sshd cannot run here: %v %s", err, out))
	}
	s.up(sshd)
	t.Cleanup(s.down)
	return s
}

func (s *sshServer) up(sshd string) {
	// Its log (-e) is dropped: the readiness probe below is a
	// connection without a handshake, which it reports.
	s.cmd = exec.Command(sshd, "-D", "-e", "-f", filepath.Join(s.dir, "sshd_config"))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatal("sshd did not listen")
}

// down stops sshd and every session it forked (a session outlives its
// listener: the connection a replica holds goes only with it).
func (s *sshServer) down() {
	if s.cmd == nil {
		return
	}
	for _, pid := range descendants(s.cmd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		var state string
		var ppid int
		if _, err := fmt.Sscan(rest, &state, &ppid); err == nil {
			parent[p] = ppid
		}
	}
	var out []int
	var walk func(int)
	walk = func(q int) {
		for c, pp := range parent {
			if pp == q {
				out = append(out, c)
				walk(c)
			}
		}
	}
	walk(pid)
	return out
}

// TestReplicaOverSFTPRecoversByItself: the record streams to a real
// OpenSSH server over SFTP; when the server goes away the box keeps
// serving devices, /healthz says "degraded" with the reason and
// otabox_replica_healthy is 0; when it returns, replication catches up by
// itself (Litestream retries, backing off to at most 5 minutes) and a
// restore over SFTP holds every device, those of the outage too.
func TestReplicaOverSFTPRecoversByItself(t *testing.T) {
	t.Parallel()
	s := startSSH(t)
	me, _ := user.Current()
	url := fmt.Sprintf("sftp://%s@127.0.0.1:%d%s", me.Username, s.port, filepath.Join(t.TempDir(), "nas", "box-1"))
	sftpFlags := []string{"--replicate-ssh-key", s.userKey, "--replicate-host-key", s.hostKey}
	dir, v1, v2, _ := fleetCatalog(t)
	r := startData(t, t.TempDir(), append([]string{"--catalog", dir, "--replicate", url}, sftpFlags...)...)
	before := checkIns(t, r.addr, 0x500, 3, v2)
	inSync(t, r, 15*time.Second)
	if h := getBody(t, "http://"+r.addr+"/healthz"); h != "ok\n" {
		t.Errorf("/healthz while in sync: %q", h)
	}

	sshd := s.cmd.Path
	s.down()
	outage := time.Now()
	var during []string
	for i := 0; ; i++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running = macN("5C:CF:7F", 0x50000+i), v1
		if res := d.Update(r.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK {
			t.Fatalf("a device during the SFTP outage: %v", res)
		}
		during = append(during, d.STAMAC)
		h := getBody(t, "http://"+r.addr+"/healthz")
		if strings.HasPrefix(h, "degraded: the fleet record's replica sftp://") && strings.Contains(h, "behind") {
			t.Logf("degraded %s after the SFTP server went away: %s", time.Since(outage).Round(time.Second), strings.TrimSpace(h))
			break
		}
		if time.Since(outage) > 40*time.Second {
			t.Fatalf("/healthz still %q %s after the SFTP server went away", h, time.Since(outage).Round(time.Second))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if m := getBody(t, "http://"+r.addr+"/metrics"); metricValue(m, "otabox_replica_healthy") != 0 || metricValue(m, "otabox_replica_errors_total") < 1 {
		t.Errorf("metrics during the outage: healthy %v, errors %v", metricValue(m, "otabox_replica_healthy"), metricValue(m, "otabox_replica_errors_total"))
	}

	s.up(sshd)
	back := time.Now()
	inSync(t, r, 90*time.Second)
	t.Logf("caught up %s after the SFTP server came back (an outage of %s)", time.Since(back).Round(time.Second), back.Sub(outage).Round(time.Second))
	if h := getBody(t, "http://"+r.addr+"/healthz"); h != "ok\n" {
		t.Errorf("/healthz after the catch-up: %q", h)
	}
	fresh := t.TempDir()
	if out, err := otaboxCmd(t, append([]string{"restore", url, "--data-dir", fresh}, sftpFlags...)...); err != nil {
		t.Fatalf("restore over SFTP: %v\n%s", err, out)
	}
	have := recorded(t, fresh)
	for _, mac := range append(before, during...) {
		if _, ok := have[mac]; !ok {
			t.Errorf("%s is not in the record restored over SFTP", mac)
		}
	}
}

// TestReplicaOnS3CompatibleStorage: the record streams to an
// S3-compatible store and a restore brings it back. The store is
// gofakes3 (github.com/johannesboyne/gofakes3, MIT), a third party's
// implementation of the S3 HTTP API, on loopback: Litestream's own AWS
// SDK client talks to it as to any endpoint= store (MinIO, Garage, a NAS's
// S3 service). Credentials come from the environment, as Litestream
// takes them.
func TestReplicaOnS3CompatibleStorage(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("otabox"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "otabox-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "otabox-test-secret")
	t.Setenv("AWS_CA_BUNDLE", "") // some machines set it; the replica refuses it (TestReplicateFlagsRefusedWithTheReason)
	url := "s3://otabox/site-3/box-1?endpoint=" + srv.URL + "&region=us-east-1&forcePathStyle=true"
	dir, _, v2, _ := fleetCatalog(t)
	r := startData(t, t.TempDir(), "--catalog", dir, "--replicate", url, "--log", "warn")
	macs := checkIns(t, r.addr, 0x600, 5, v2)
	inSync(t, r, 15*time.Second)
	kill9(r)
	fresh := t.TempDir()
	if out, err := otaboxCmd(t, "restore", url, "--data-dir", fresh); err != nil {
		t.Fatalf("restore from S3: %v\n%s", err, out)
	}
	have := recorded(t, fresh)
	for _, mac := range macs {
		if _, ok := have[mac]; !ok {
			t.Errorf("%s is not in the record restored from S3", mac)
		}
	}
	objects, err := backend.ListBucket("otabox", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil || len(objects.Contents) == 0 {
		t.Fatalf("the bucket holds nothing: %v", err)
	}
	t.Logf("%d objects in the bucket, e.g. %s", len(objects.Contents), objects.Contents[0].Key)
}
