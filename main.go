// Command otabox is an over-the-air firmware update server for ESP8266 and
// ESP32 devices running AutoConnectUpdate (or plain ESPhttpUpdate), a
// drop-in replacement for AutoConnect's updateserver.py.
package main

import (
	"cmp"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"otabox/appliance"
	"otabox/appliance/catalog"
	"otabox/appliance/discovery"
	"otabox/appliance/espimage"
	"otabox/appliance/fsimage"
	"otabox/appliance/httpapi"
	"otabox/appliance/hub"
	"otabox/appliance/policy"
	"otabox/appliance/replica"
	"otabox/appliance/report"
	"otabox/appliance/store"
	"otabox/appliance/suggest"
	"otabox/appliance/tray"
)

// Set by the Makefile with -ldflags.
var (
	version   = "dev"
	buildTime = "" // RFC 3339
)

// defaultMemoryLimit (MiB) keeps otabox small on a small board: the
// heap's goal is otherwise twice what was live at the last collection,
// and the first second of a fleet update (a thousand requests at once)
// sets that high for the minutes of the downloads. 1,000 devices at
// 20 KB/s: 74-77 MB RSS without a limit, 59 MB with this one, for 20 %
// more CPU (bench/compare.sh). Past about 2,000 downloads at once the
// live memory reaches it and collections run often: raise it there.
const defaultMemoryLimit = 40

func main() {
	serveFlags := []cli.Flag{
		&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 8000, Usage: "TCP port devices connect to", EnvVars: []string{"OTABOX_PORT"}},
		&cli.StringFlag{Name: "bind", Aliases: []string{"b"}, Value: "", DefaultText: "all interfaces", Usage: "address to listen on", EnvVars: []string{"OTABOX_BIND"}},
		catalogFlag("serve firmware from this directory"),
		&cli.StringFlag{Name: "log", Aliases: []string{"l"}, Value: "info", Usage: "log level: debug, info, warning, error, critical", EnvVars: []string{"OTABOX_LOG"}},
		&cli.StringFlag{Name: "update-path", Value: "/update", Usage: "fixed URL that gives each device the newest image of its project (\"\" turns it off)", EnvVars: []string{"OTABOX_UPDATE_PATH"}},
		dataDirFlag(),
		&cli.StringFlag{Name: "policy", Usage: "policy file: allowlist, groups, pinning, rollouts, download cap (re-read on SIGHUP)", EnvVars: []string{"OTABOX_POLICY"}},
		&cli.StringFlag{Name: "admin-password", Usage: "protect the status page and /api/* with this password (basic auth, any user) and turn on the page's actions (upload, remove, retry, batches)", EnvVars: []string{"OTABOX_ADMIN_PASSWORD"}},
		&cli.IntFlag{Name: "max-upload", Value: 16, Usage: "the largest image in MiB the status page takes as an upload", EnvVars: []string{"OTABOX_MAX_UPLOAD"}},
		&cli.StringFlag{Name: "device-user", Value: "otabox", Usage: "user name devices send with setAuthorization (with --device-password)", EnvVars: []string{"OTABOX_DEVICE_USER"}},
		&cli.StringFlag{Name: "device-password", Usage: "require devices to send this password (HTTP basic auth) for firmware and /update", EnvVars: []string{"OTABOX_DEVICE_PASSWORD"}},
		&cli.StringFlag{Name: "device-password-file", Usage: "read the device password from this file's first line", EnvVars: []string{"OTABOX_DEVICE_PASSWORD_FILE"}},
		&cli.BoolFlag{Name: "device-auth-catalog", Usage: "require the device credentials for /_catalog too (AutoConnectUpdate sends none)", EnvVars: []string{"OTABOX_DEVICE_AUTH_CATALOG"}},
		&cli.StringFlag{Name: "admin-password-file", Usage: "read the admin password from this file (e.g. $CREDENTIALS_DIRECTORY/admin, systemd's LoadCredential=)", EnvVars: []string{"OTABOX_ADMIN_PASSWORD_FILE"}},
		&cli.IntFlag{Name: "memory-limit", Value: defaultMemoryLimit, Usage: "soft memory limit in MiB (0: none): the garbage collector works harder (more CPU) to stay under it; GOMEMLIMIT, when set, replaces the default", EnvVars: []string{"OTABOX_MEMORY_LIMIT"}},
		&cli.StringSliceFlag{Name: "verify-key", Usage: "serve only images whose signature verifies under this PEM public key (repeatable; ESP8266 signing.py RSA, ESP32 Secure Boot v2 RSA-3072/ECDSA)", EnvVars: []string{"OTABOX_VERIFY_KEY"}},
		&cli.StringSliceFlag{Name: "gzip", Usage: "also serve these ESP8266 images gzip-compressed to cores that inflate them (catalog path patterns; \"*\" for all)", EnvVars: []string{"OTABOX_GZIP"}},
		&cli.BoolFlag{Name: "mdns", Value: true, Usage: "advertise the server over mDNS as _acupdate._tcp (--mdns=false turns it off)", EnvVars: []string{"OTABOX_MDNS"}},
		&cli.StringFlag{Name: "mdns-name", DefaultText: "otabox-<6 hex of the machine id>", Usage: "mDNS instance and host name (a-z, 0-9, -)", EnvVars: []string{"OTABOX_MDNS_NAME"}},
		&cli.StringFlag{Name: "mdns-iface", DefaultText: "every LAN interface", Usage: "advertise only on this interface", EnvVars: []string{"OTABOX_MDNS_IFACE"}},
		&cli.StringFlag{Name: "mdns-path", Value: ".", Usage: "catalog path devices should use (TXT path=)", EnvVars: []string{"OTABOX_MDNS_PATH"}},
		&cli.IntFlag{Name: "max-conns-per-ip", Value: 16, Usage: "open connections one client address may hold (raise it when many devices share one NAT address)", EnvVars: []string{"OTABOX_MAX_CONNS_PER_IP"}},
		&cli.IntFlag{Name: "max-conns", DefaultText: "the open-file limit less 128", Usage: "open connections in all; when full, idle keep-alives and dribbling heads are closed first", EnvVars: []string{"OTABOX_MAX_CONNS"}},
		&cli.Int64Flag{Name: "min-rate", Value: 2048, Usage: "cut off a download whose device takes fewer bytes/s than this over 30 s, freeing its slot (0: never)", EnvVars: []string{"OTABOX_MIN_RATE"}},
		&cli.DurationFlag{Name: "grace", Value: 30 * time.Second, Usage: "how long running downloads may finish on shutdown", EnvVars: []string{"OTABOX_GRACE"}},
		&cli.Int64Flag{Name: "keep-events", Value: 1_000_000, Usage: "events the fleet record keeps (oldest deleted first; devices are always kept)", EnvVars: []string{"OTABOX_KEEP_EVENTS"}},
		&cli.IntFlag{Name: "keep-days", Value: 180, Usage: "days of events the fleet record keeps", EnvVars: []string{"OTABOX_KEEP_DAYS"}},
		&cli.StringSliceFlag{Name: "replicate", Usage: "stream the fleet record to this replica as it is written: file:///media/usb/otabox, sftp://user@nas/otabox/BOX, s3://bucket/otabox/BOX (restored from it first onto an empty data dir)", EnvVars: []string{"OTABOX_REPLICATE"}},
	}
	serveFlags = append(serveFlags, replicaFlags()...)
	app := &cli.App{
		Name:    "otabox",
		Usage:   "OTA firmware update server for ESP8266 and ESP32 (AutoConnectUpdate)",
		Version: version,
		Flags:   serveFlags,
		// Serving starts only for "serve" or no arguments at all: a typo
		// must not open port 8000 on every interface.
		Action:       serveOnly,
		OnUsageError: usageError,
		Commands: []*cli.Command{
			{Name: "serve", Usage: "serve firmware to devices (the default)", Flags: serveFlags, Action: serveOnly, OnUsageError: usageError},
			{Name: "version", Usage: "print the version and build time", Action: func(*cli.Context) error { fmt.Println("otabox version " + versionLine()); return nil }},
			{
				Name: "discover", Usage: "find otabox servers on the LAN over mDNS",
				Flags: []cli.Flag{
					&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second, Usage: "how long to listen for answers"},
					&cli.StringFlag{Name: "iface", Usage: "interface to query on (default: the kernel's choice)"},
				},
				Action: discover,
			},
			{
				Name: "devices", Usage: "print the fleet as the record in the data dir knows it",
				Flags: []cli.Flag{
					dataDirFlag(),
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.BoolFlag{Name: "csv", Usage: "print CSV"},
					&cli.StringFlag{Name: "state", Usage: "only devices in this update state: confirmed, failed, sent, cut-off, none, held, or problem (failed, cut off, held back or last refused)"},
					&cli.StringFlag{Name: "mac", Usage: "only this MAC, or MACs with this prefix ending in *"},
					&cli.IntFlag{Name: "limit", Value: 10000, Usage: "at most this many devices"},
				},
				Action: devices,
			},
			{
				Name: "history", Usage: "print one device's requests, newest first", ArgsUsage: "MAC",
				Flags: []cli.Flag{
					dataDirFlag(),
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.BoolFlag{Name: "csv", Usage: "print CSV"},
					&cli.IntFlag{Name: "limit", Value: 100, Usage: "at most this many events"},
				},
				Action: history,
			},
			{
				Name: "retry", Usage: "let a device whose updates failed be sent its image again (clears the hold-back)", ArgsUsage: "MAC",
				Flags:  []cli.Flag{dataDirFlag()},
				Action: retry,
			},
			{
				Name: "batch", Usage: "open and close factory batches (a tray of boards given one image by /update)",
				Action: unknownSubcommand,
				Subcommands: []*cli.Command{
					{
						Name: "start", Usage: "open a batch: every device asking /update (or those of --group) gets --image until it is closed", ArgsUsage: "NAME",
						Flags: []cli.Flag{
							dataDirFlag(), catalogFlag("look for --image in this directory (the one the server serves)"),
							&cli.StringFlag{Name: "image", Usage: "catalog path of the production image (required)"},
							&cli.IntFlag{Name: "expect", Usage: "boards on the tray (the station page counts toward it)"},
							&cli.StringFlag{Name: "group", Usage: "only devices of this policy group (a group line of --policy)"},
							&cli.StringFlag{Name: "note", Usage: "free text for the report"},
							&cli.StringFlag{Name: "customer", Usage: "customer, for the report"},
							&cli.StringFlag{Name: "order", Usage: "customer's order number, for the report"},
						},
						Action: batchStart,
					},
					{Name: "close", Usage: "close a batch: its devices get the usual /update answers again", ArgsUsage: "NAME", Flags: []cli.Flag{dataDirFlag(),
						&cli.BoolFlag{Name: "force", Usage: "close even with boards still waiting to prove they run the image (the report says so)"}}, Action: batchClose},
					{Name: "list", Usage: "print every batch with its counts", Flags: []cli.Flag{dataDirFlag()}, Action: batchList},
				},
			},
			{
				Name: "report", Usage: "print a batch's report: one row per device (csv, json), an A4 page (html) or a sheet of QR labels (labels)", ArgsUsage: "BATCH",
				Flags: []cli.Flag{
					dataDirFlag(),
					&cli.StringFlag{Name: "format", Value: "csv", Usage: "csv, json, html or labels"},
					&cli.BoolFlag{Name: "all-labels", Usage: "labels: one for every board, those that did not pass marked NOT PASSED (default: only boards that passed)"},
				},
				Action: batchReport,
			},
			{Name: "list", Usage: "print the catalog as a table", Flags: []cli.Flag{catalogFlag("list the firmware in this directory")}, Action: list},
			{
				Name: "flash", Usage: "flash a tray of boards over their serial ports at once (chip and MAC read from each ROM)", ArgsUsage: "[OFFSET=FILE...]",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "port", Usage: "a board's port: /dev/ttyUSB0, /dev/serial/by-path/..., socket://host:port (ser2net raw); SLOT=PORT names its slot (repeatable)"},
					&cli.StringFlag{Name: "image", Usage: "a merged image (or an ESP8266 app) written at 0"},
					&cli.StringFlag{Name: "manifest", Usage: "an ESP Web Tools manifest: each board gets its own chip family's parts"},
					&cli.StringFlag{Name: "flash-mode", Value: "keep", Usage: "set the bootloader header's flash mode: qio, qout, dio, dout or keep"},
					&cli.StringFlag{Name: "flash-size", Value: "keep", Usage: "set the bootloader header's flash size: detect (from the flash chip's id), 1MB, 2MB, 4MB, ... or keep"},
					&cli.StringFlag{Name: "flash-freq", Value: "keep", Usage: "set the bootloader header's flash frequency: 80m, 40m, 26m, 20m or keep"},
					&cli.StringFlag{Name: "board-data", Usage: "write each board's own values as an NVS partition at OFFSET:SIZE (a data/nvs line of its partition table)"},
					&cli.StringSliceFlag{Name: "board-value", Usage: "KEY=TEMPLATE for --board-data, in namespace otabox: {mac}, {mac12}, {slot}, {chip}, {batch} (repeatable)"},
					&cli.IntFlag{Name: "parallel", Value: 8, Usage: "boards flashed at once"},
					&cli.IntFlag{Name: "baud", Value: 460800, Usage: "baud rate to write at once the ROM is synced at 115200 (the ESP8266 ROM stays at 115200)"},
					&cli.BoolFlag{Name: "json", Usage: "print each board's row as JSON"},
					&cli.StringFlag{Name: "batch", Usage: "record the boards in this open batch (otabox batch start)"},
					&cli.BoolFlag{Name: "no-record", Usage: "keep no record of the boards in the data dir"},
					dataDirFlag(),
				},
				Action: flashTray,
			},
			{
				Name: "restore", Usage: "bring the fleet record back from a replica (--replicate) into the data dir, e.g. onto a new SD card", ArgsUsage: "URL",
				Flags: append([]cli.Flag{dataDirFlag(),
					&cli.BoolFlag{Name: "force", Usage: "replace a record the data dir holds (it is moved aside, never deleted)"},
				}, replicaFlags()...),
				Action: restore,
			},
			{
				Name: "hub", Usage: "read many boxes' replicas (--replicate) as one fleet: one status page, /api/devices, /api/events and batch reports across them",
				Flags: append([]cli.Flag{
					&cli.StringSliceFlag{Name: "box", Usage: "NAME=URL: a box by its name and its replica's URL (repeatable)", EnvVars: []string{"OTABOX_HUB_BOXES"}},
					&cli.StringFlag{Name: "dir", Value: "otabox-hub", Usage: "where the hub keeps its read-only copy of each box's record", EnvVars: []string{"OTABOX_HUB_DIR"}},
					&cli.DurationFlag{Name: "refresh", Value: time.Minute, Usage: "how often each box's replica is read again", EnvVars: []string{"OTABOX_HUB_REFRESH"}},
					&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 8001, Usage: "TCP port of the hub's page and API", EnvVars: []string{"OTABOX_HUB_PORT"}},
					&cli.StringFlag{Name: "bind", Aliases: []string{"b"}, Value: "", DefaultText: "all interfaces", Usage: "address to listen on", EnvVars: []string{"OTABOX_HUB_BIND"}},
					&cli.StringFlag{Name: "admin-password", Usage: "protect the hub's page and API with this password (basic auth, any user)", EnvVars: []string{"OTABOX_ADMIN_PASSWORD"}},
					&cli.StringFlag{Name: "admin-password-file", Usage: "read the admin password from this file", EnvVars: []string{"OTABOX_ADMIN_PASSWORD_FILE"}},
					&cli.StringFlag{Name: "log", Aliases: []string{"l"}, Value: "info", Usage: "log level: debug, info, warning, error, critical", EnvVars: []string{"OTABOX_LOG"}},
				}, replicaFlags()...),
				Action: serveHub,
			},
			{
				Name: "inspect", Usage: "describe firmware image files", ArgsUsage: "FILE...",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print the parsed description as JSON"},
					&cli.StringSliceFlag{Name: "key", Usage: "check the signature against this PEM public key (repeatable)"},
				},
				Action: inspect,
			},
		},
	}
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = usageError
		}
	}
	if err := app.Run(flagsFirst(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "otabox:", err)
		os.Exit(1)
	}
}

// serveOnly serves when there is nothing but flags; any word is an unknown
// command, answered with the closest one.
func serveOnly(c *cli.Context) error {
	if c.NArg() > 0 {
		word := c.Args().First()
		msg := fmt.Sprintf("otabox: unknown command %q", word)
		if s := closest(word, c.App.Commands); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return cli.Exit(msg+" (otabox --help lists them)", 2)
	}
	return serve(c)
}

// usageError turns urfave/cli's help dump on a bad flag into one line.
func usageError(c *cli.Context, err error, _ bool) error {
	name := "otabox"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		name += " " + c.Command.Name
	}
	return cli.Exit(fmt.Sprintf("%s: %v (%s --help lists the flags)", name, err, name), 2)
}

// closest is the command name nearest to word, if any is near.
func closest(word string, cmds []*cli.Command) string {
	best, bestD := "", 3
	for _, cmd := range cmds {
		if cmd.Name == "help" {
			continue
		}
		if d := suggest.Distance(word, cmd.Name); d < bestD || (strings.HasPrefix(cmd.Name, word) && len(word) >= 2 && bestD > 1) {
			best, bestD = cmd.Name, min(d, 1)
		}
	}
	return best
}

// serviceDataDir is where the systemd unit keeps its record and its
// firmware/ (OTABOX_SERVICE_DIR moves it, for a packager and the tests).
var serviceDataDir = cmp.Or(os.Getenv("OTABOX_SERVICE_DIR"), "/var/lib/otabox")

// dataDirFlag defaults to systemd's StateDirectory when run as the unit.
func dataDirFlag() cli.Flag {
	def := "otabox-data"
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		def = d
	}
	return &cli.StringFlag{Name: "data-dir", Value: def, DefaultText: "systemd's StateDirectory, else ./otabox-data", Usage: "where the fleet record (otabox.db) lives (\"\" keeps none)", EnvVars: []string{"OTABOX_DATA_DIR"}}
}

// readDataDir is the data dir a reading command uses: the one given, else
// the service's when it holds a record, else the default. It says which.
func readDataDir(c *cli.Context) string {
	dir := c.String("data-dir")
	if !c.IsSet("data-dir") && os.Getenv("STATE_DIRECTORY") == "" {
		if _, err := os.Stat(filepath.Join(serviceDataDir, store.FileName)); err == nil {
			dir = serviceDataDir
		}
	}
	fmt.Fprintf(os.Stderr, "otabox: reading %s\n", filepath.Join(dir, store.FileName))
	return dir
}

// writeDataDir is the data dir a writing command uses: as readDataDir,
// so that beside the installed service it writes the service's record.
func writeDataDir(c *cli.Context) string {
	dir := c.String("data-dir")
	if !c.IsSet("data-dir") && os.Getenv("STATE_DIRECTORY") == "" {
		if _, err := os.Stat(filepath.Join(serviceDataDir, store.FileName)); err == nil {
			dir = serviceDataDir
		}
	}
	return dir
}

// unknownSubcommand answers a command's unknown subcommand in one line,
// with the closest one (rc 2), instead of urfave/cli's "No help topic".
func unknownSubcommand(c *cli.Context) error {
	var names []string
	for _, sub := range c.Command.Subcommands {
		if sub.Name != "help" {
			names = append(names, sub.Name)
		}
	}
	if c.NArg() == 0 {
		return cli.Exit(fmt.Sprintf("otabox %s: name what to do: %s", c.Command.Name, strings.Join(names, ", ")), 2)
	}
	msg := fmt.Sprintf("otabox %s: no command %q", c.Command.Name, c.Args().First())
	if s := suggest.Closest(c.Args().First(), names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return cli.Exit(msg+" ("+strings.Join(names, ", ")+")", 2)
}

// dataDirArg is " --data-dir DIR" when the command was given one, for
// the commands it prints to run next.
func dataDirArg(c *cli.Context, dir string) string {
	if !c.IsSet("data-dir") {
		return ""
	}
	return " --data-dir " + shellQuote(dir)
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func format(c *cli.Context) string {
	switch {
	case c.Bool("json"):
		return store.FormatJSON
	case c.Bool("csv"):
		return store.FormatCSV
	}
	return store.FormatTable
}

// catalogFlag is --catalog, with what it means to the command.
func catalogFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "catalog", Aliases: []string{"d"}, DefaultText: "the embedded firmware", Usage: usage, EnvVars: []string{"OTABOX_CATALOG"}}
}

func serve(c *cli.Context) error {
	level, err := appliance.ParseLevel(c.String("log"))
	if err != nil {
		return cli.Exit("otabox: --log: "+err.Error(), 2)
	}
	src, err := source(c)
	if err != nil {
		return err
	}
	var mdns *discovery.Config
	if c.Bool("mdns") {
		mdns = &discovery.Config{
			Name:    c.String("mdns-name"),
			Path:    c.String("mdns-path"),
			Version: version,
			Iface:   c.String("mdns-iface"),
			BindIP:  net.ParseIP(c.String("bind")),
		}
		if mdns.Name != "" {
			if err := discovery.CheckName(mdns.Name); err != nil {
				return cli.Exit("otabox: --mdns-name: "+err.Error(), 2)
			}
		}
	}
	for _, p := range c.StringSlice("gzip") {
		if err := appliance.ValidGzipPattern(p); err != nil {
			return cli.Exit(fmt.Sprintf("otabox: --gzip %q: %v", p, err), 2)
		}
	}
	if c.IsSet("memory-limit") || os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit: the runtime collects sooner and returns memory to
		// the system, and never spends more than half the CPU doing so.
		limit := int64(math.MaxInt64)
		if mb := c.Int("memory-limit"); mb > 0 {
			limit = int64(mb) << 20
		}
		debug.SetMemoryLimit(limit)
	}
	if n := c.Int("max-upload"); n < 1 || n > 128 {
		return cli.Exit(fmt.Sprintf("otabox: --max-upload %d: give 1 to 128 MiB (an ESP's flash is at most 16 MiB on most modules)", n), 2)
	}
	keys, err := readKeys(c.StringSlice("verify-key"))
	if err != nil {
		return cli.Exit("otabox: --verify-key: "+err.Error(), 2)
	}
	password, err := secret(c, "admin-password")
	if err != nil {
		return cli.Exit("otabox: "+err.Error(), 2)
	}
	devicePassword, err := secret(c, "device-password")
	if err != nil {
		return cli.Exit("otabox: "+err.Error(), 2)
	}
	rep, err := replicaOptions(c, c.StringSlice("replicate"))
	if err != nil {
		return cli.Exit("otabox: --replicate: "+err.Error(), 2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal shuts down gracefully; a second one does not wait.
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		<-again
		fmt.Fprintln(os.Stderr, "otabox: second signal: forcing exit without waiting for downloads or records")
		os.Exit(1)
	}()
	return appliance.Run(ctx, appliance.Config{
		Addr:          net.JoinHostPort(c.String("bind"), strconv.Itoa(c.Int("port"))),
		Firmware:      src,
		Logger:        appliance.NewLogger(os.Stderr, level),
		UpdatePath:    c.String("update-path"),
		Grace:         c.Duration("grace"),
		MDNS:          mdns,
		Gzip:          c.StringSlice("gzip"),
		VerifyKeys:    keys,
		DataDir:       c.String("data-dir"),
		Policy:        c.String("policy"),
		AdminPassword: password,
		MaxUpload:     int64(c.Int("max-upload")) << 20,
		DeviceAuth:    httpapi.DeviceAuth{User: c.String("device-user"), Password: devicePassword, Catalog: c.Bool("device-auth-catalog")},
		Version:       versionLine(),
		MaxConnsPerIP: c.Int("max-conns-per-ip"),
		MaxConns:      c.Int("max-conns"),
		MinRate:       minRate(c.Int64("min-rate")),
		KeepEvents:    c.Int64("keep-events"),
		KeepAge:       time.Duration(c.Int("keep-days")) * 24 * time.Hour,
		Replica:       rep,
	})
}

// replicaFlags are the replica's own settings, for serve and restore.
func replicaFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "replicate-ssh-key", Usage: "sftp replicas: the private key to log in with", EnvVars: []string{"OTABOX_REPLICATE_SSH_KEY"}},
		&cli.StringFlag{Name: "replicate-host-key", Usage: "sftp replicas: the server's public key (\"ssh-ed25519 AAAA...\", as ssh-keyscan prints it); required", EnvVars: []string{"OTABOX_REPLICATE_HOST_KEY"}},
	}
}

// replicaOptions is the replica the flags name, checked; nil for none.
func replicaOptions(c *cli.Context, urls []string) (*replica.Options, error) {
	switch len(urls) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("--replicate given %d times: the record streams to one replica (Litestream keeps one per database); copy that one onward if you need two", len(urls))
	}
	o := &replica.Options{URL: urls[0], SSHKey: c.String("replicate-ssh-key"), HostKey: c.String("replicate-host-key")}
	if err := replica.Check(*o); err != nil {
		return nil, err
	}
	return o, nil
}

// serveHub reads the boxes' replicas and serves them as one fleet.
func serveHub(c *cli.Context) error {
	level, err := appliance.ParseLevel(c.String("log"))
	if err != nil {
		return cli.Exit("otabox hub: --log: "+err.Error(), 2)
	}
	var boxes []hub.Box
	for _, s := range c.StringSlice("box") {
		b, err := hub.ParseBox(s)
		if err != nil {
			return cli.Exit("otabox hub: "+err.Error(), 2)
		}
		b.Replica.SSHKey, b.Replica.HostKey = c.String("replicate-ssh-key"), c.String("replicate-host-key")
		boxes = append(boxes, b)
	}
	password, err := secret(c, "admin-password")
	if err != nil {
		return cli.Exit("otabox hub: "+err.Error(), 2)
	}
	log := appliance.NewLogger(os.Stderr, level)
	slog.SetDefault(appliance.NewLogger(os.Stderr, max(level, slog.LevelWarn))) // Litestream's restore steps
	h, err := hub.New(hub.Config{Dir: c.String("dir"), Boxes: boxes, Refresh: c.Duration("refresh"), Logger: log})
	if err != nil {
		return cli.Exit("otabox "+err.Error(), 2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return h.Serve(ctx, net.JoinHostPort(c.String("bind"), strconv.Itoa(c.Int("port"))), password)
}

// restore brings a record back from a replica into the data dir.
func restore(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("otabox restore: give the replica's URL (as given to --replicate)", 2)
	}
	o, err := replicaOptions(c, []string{c.Args().First()})
	if err != nil {
		return cli.Exit("otabox restore: "+err.Error(), 2)
	}
	dir := c.String("data-dir")
	if dir == "" {
		return cli.Exit("otabox restore: --data-dir \"\" keeps no record to restore into", 2)
	}
	// Litestream logs a restore's steps to the default logger: only its
	// warnings here, the command prints what came back.
	slog.SetDefault(appliance.NewLogger(os.Stderr, slog.LevelWarn))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := appliance.RestoreRecord(ctx, dir, *o, c.Bool("force"))
	if err != nil {
		return cli.Exit("otabox restore: "+err.Error(), 1)
	}
	fmt.Println(res)
	return nil
}

// minRate maps the flag's 0 (never) to the appliance's "off".
func minRate(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// secret is --NAME, or the first line of --NAME-file; not both.
func secret(c *cli.Context, name string) (string, error) {
	file := c.String(name + "-file")
	if file == "" {
		return c.String(name), nil
	}
	if c.String(name) != "" {
		return "", fmt.Errorf("give --%s or --%s-file, not both", name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	if pw = strings.TrimRight(pw, "\r"); pw == "" {
		return "", fmt.Errorf("--%s-file %s: the first line is empty", name, file)
	}
	return pw, nil
}

func devices(c *cli.Context) error {
	f := store.DeviceFilter{State: c.String("state"), MAC: c.String("mac"), Limit: c.Int("limit")}
	if err := f.Check(); err != nil {
		return cli.Exit("otabox devices: "+strings.TrimPrefix(err.Error(), store.ErrBadFilter.Error()+": "), 2)
	}
	st, err := store.OpenReader(readDataDir(c))
	if err != nil {
		return err
	}
	defer st.Close()
	devs, total, err := st.Devices(c.Context, f)
	if err != nil {
		return err
	}
	if total > len(devs) {
		fmt.Fprintf(os.Stderr, "otabox: %d of %d devices shown (--limit)\n", len(devs), total)
	}
	return store.WriteDevices(os.Stdout, devs, format(c))
}

func history(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("otabox history: name one device MAC", 2)
	}
	mac, err := store.NormalizeMAC(c.Args().First())
	if err != nil {
		return cli.Exit("otabox history: "+strings.TrimPrefix(err.Error(), store.ErrBadFilter.Error()+": "), 2)
	}
	st, err := store.OpenReader(readDataDir(c))
	if err != nil {
		return err
	}
	defer st.Close()
	evs, err := st.Events(c.Context, store.EventFilter{MAC: mac, Limit: c.Int("limit")})
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return cli.Exit("otabox history: no requests of "+mac+" in the record", 1)
	}
	return store.WriteEvents(os.Stdout, evs, format(c))
}

// batchStart opens a batch, after checking that its image is in the
// catalog (the one given with --catalog, else the embedded one): a batch
// that names a missing file would give no device anything.
func batchStart(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("otabox batch start: name the batch (e.g. tray-7)", 2)
	}
	name := c.Args().First()
	if err := policy.CheckBatchName(name); err != nil {
		return cli.Exit("otabox batch start: "+err.Error(), 2)
	}
	if c.String("image") == "" {
		return cli.Exit("otabox batch start: --image is required: the catalog path of the production image (otabox list shows them)", 2)
	}
	src, err := source(c)
	if err != nil {
		return err
	}
	cat, err := appliance.LoadCatalog(src, appliance.NewLogger(os.Stderr, slog.LevelError))
	if err != nil {
		return err
	}
	b, e, err := appliance.NewBatch(cat, name, c.String("image"))
	if !errors.Is(err, appliance.ErrNotInCatalog) && err != nil {
		return cli.Exit("otabox batch start: --"+err.Error(), 2)
	}
	if err != nil {
		msg := "otabox batch start: " + err.Error()
		if c.String("catalog") == "" {
			msg += " (pass --catalog DIR when the server serves a directory)"
		}
		return cli.Exit(msg, 1)
	}
	b.Group, b.Expect, b.Note, b.Customer, b.Order, b.Source = c.String("group"), c.Int("expect"), c.String("note"), c.String("customer"), c.String("order"), "cli"
	dir := readDataDir(c)
	if err := store.StartBatch(dir, b); err != nil {
		return cli.Exit("otabox batch start: "+err.Error(), 1)
	}
	ver := ""
	if e.Image != nil && e.Image.Version != "" {
		ver = " " + e.Image.Version
	}
	cover := "every device asking /update gets"
	if b.Group != "" {
		cover = "the devices of group " + b.Group + " asking /update get"
	}
	fmt.Printf("batch %s open: %s %s%s (%s); watch /station, close it with otabox batch close %s%s\n", name, cover, b.Image, ver, e.Image.Chip, name, dataDirArg(c, dir))
	return nil
}

func batchClose(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("otabox batch close: name the batch", 2)
	}
	dir := readDataDir(c)
	b, err := store.CloseBatch(dir, c.Args().First(), c.Bool("force"))
	if err != nil {
		return cli.Exit("otabox batch close: "+err.Error(), 1)
	}
	fmt.Printf("batch %s closed; its report: otabox report %s%s\n", b.Name, b.Name, dataDirArg(c, dir))
	return nil
}

func batchList(c *cli.Context) error {
	st, err := store.OpenReader(readDataDir(c))
	if err != nil {
		return err
	}
	defer st.Close()
	bs, err := st.Batches(c.Context)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATE\tIMAGE\tGROUP\tSEEN\tCONFIRMED\tATTENTION\tOPENED")
	for _, b := range bs {
		devs, err := st.BatchDevices(c.Context, b.Name)
		if err != nil {
			return err
		}
		sum := store.Summarize(b, devs, time.Now())
		state := "open"
		if !b.IsOpen() {
			state = "closed"
		}
		group := b.Group
		if group == "" {
			group = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", b.Name, state, b.Image, group, sum.Seen, sum.Confirmed, sum.NeedsHelp, b.Opened.Local().Format("2006-01-02 15:04"))
	}
	return tw.Flush()
}

func batchReport(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("otabox report: name one batch", 2)
	}
	f := c.String("format")
	switch f {
	case report.CSV, report.JSON, report.HTML, report.Labels:
	default:
		return cli.Exit(fmt.Sprintf("otabox report: --format %q: use csv, json, html or labels", f), 2)
	}
	st, err := store.OpenReader(readDataDir(c))
	if err != nil {
		return err
	}
	defer st.Close()
	name := c.Args().First()
	b, ok, err := st.Batch(c.Context, name)
	if err != nil {
		return err
	}
	if !ok {
		return cli.Exit("otabox report: no batch "+strconv.Quote(name)+" in the fleet record (otabox batch list shows them)", 1)
	}
	devs, err := st.BatchDevices(c.Context, name)
	if err != nil {
		return err
	}
	r := report.New(*b, devs, time.Now())
	r.AllLabels = c.Bool("all-labels")
	return report.Write(os.Stdout, f, r)
}

func discover(c *cli.Context) error {
	found, err := discovery.Browse(c.Context, c.String("iface"), c.Duration("timeout"))
	for _, f := range found {
		fmt.Println(f)
	}
	if err != nil {
		return err
	}
	if len(found) == 0 {
		return cli.Exit("otabox discover: no otabox answered within "+c.Duration("timeout").String(), 1)
	}
	return nil
}

func retry(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("otabox retry: name one device MAC", 2)
	}
	mac := strings.ToUpper(c.Args().First())
	known, err := store.Retry(readDataDir(c), mac)
	if err != nil {
		return err
	}
	if !known {
		return cli.Exit("otabox retry: "+mac+" is not in the fleet record", 1)
	}
	fmt.Printf("%s: hold-back cleared; its next check-in may be sent the image again\n", mac)
	return nil
}

// source is the --catalog directory, or the embedded firmware.
func source(c *cli.Context) (appliance.Source, error) {
	if dir := c.String("catalog"); dir != "" {
		return appliance.OpenDir(dir)
	}
	if cmd := c.Command; cmd != nil && (cmd.Name == "start" || cmd.Name == "list") && os.Getenv("STATE_DIRECTORY") == "" {
		// Beside the installed service (its record is there), `batch
		// start` and `list` look at what it serves, not at this binary's
		// embedded catalog.
		if _, err := os.Stat(filepath.Join(serviceDataDir, store.FileName)); err == nil {
			if st, err := os.Stat(filepath.Join(serviceDataDir, "firmware")); err == nil && st.IsDir() {
				return appliance.OpenDir(filepath.Join(serviceDataDir, "firmware"))
			}
		}
	}
	sub, err := fs.Sub(firmware, "firmware")
	if err != nil {
		return appliance.Source{}, err
	}
	m, err := catalog.ParseManifest(manifest, firmwareGzip)
	if err != nil {
		return appliance.Source{}, fmt.Errorf("embedded %w", err)
	}
	if len(m.Files) == 0 && c.Command.Name != "list" {
		// A release built without FIRMWARE= carries none: as the service,
		// serve its state folder's firmware/, where a technician copies them.
		if sd, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); sd != "" {
			dir := filepath.Join(sd, "firmware")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return appliance.Source{}, fmt.Errorf("catalog %s: %w", dir, err)
			}
			return appliance.OpenDir(dir)
		}
	}
	return appliance.Source{FS: sub, Name: "embedded", Embedded: true, Stamp: stamp(), Manifest: m}, nil
}

// versionLine is the version with the build time make stamps in, for
// `otabox version` and the status page.
func versionLine() string {
	if t, err := time.Parse(time.RFC3339, buildTime); err == nil {
		return version + ", built " + t.UTC().Format("2006-01-02 15:04 UTC")
	}
	return version + ", build time not stamped (make build stamps it)"
}

// stamp is the build time, the date embedded files without a build stamp
// of their own are listed with.
func stamp() time.Time {
	if t, err := time.Parse(time.RFC3339, buildTime); err == nil {
		return t
	}
	if exe, err := os.Executable(); err == nil {
		if fi, err := os.Stat(exe); err == nil {
			return fi.ModTime()
		}
	}
	return time.Now()
}

func list(c *cli.Context) error {
	src, err := source(c)
	if err != nil {
		return err
	}
	// Every file left out is warned about, with the reason serve gives.
	cat, err := appliance.LoadCatalog(src, appliance.NewLogger(os.Stderr, slog.LevelWarn))
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tNAME\tTYPE\tCHIP\tVERSION\tSIZE\tMD5")
	for _, e := range cat.Files() {
		chip, ver, typ := "-", "-", string(e.Type)
		if e.FS != nil {
			typ = string(e.FS.Kind)
		}
		if e.Type == catalog.Bin {
			chip = e.Image.Chip.String()
			if e.Image.Compressed {
				chip += " (gzip)"
			}
			if e.Image.Version != "" {
				ver = e.Image.Version
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Path, e.Name, typ, chip, ver, e.Size, e.MD5)
	}
	return tw.Flush()
}

func inspect(c *cli.Context) error {
	if c.NArg() == 0 {
		return cli.Exit("otabox inspect: name at least one image file", 2)
	}
	keys, err := readKeys(c.StringSlice("key"))
	if err != nil {
		return cli.Exit("otabox inspect: --key: "+err.Error(), 2)
	}
	failed := 0
	for _, name := range c.Args().Slice() {
		b, err := os.ReadFile(name)
		var img *espimage.Image
		if err == nil {
			img, err = espimage.Parse(b)
		}
		var notImage *espimage.FormatError
		if errors.As(err, &notImage) && notImage.NotImage {
			if fsi := fsimage.Recognise(name, b[:min(len(b), fsimage.HeadLen)], int64(len(b))); fsi != nil {
				inspectFilesystem(name, b, fsi, c.Bool("json"))
				continue
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			failed++
			continue
		}
		// With --key, the verdict is part of the answer: an image that
		// would be left out of the catalog fails the command too.
		verdict, how := "", ""
		if len(keys) > 0 {
			how, err = espimage.Verify(b, img, keys)
			if verdict = "ok (" + how + ")"; err != nil {
				verdict = "FAILED: " + err.Error()
				failed++
			}
		}
		if c.Bool("json") {
			out, _ := json.MarshalIndent(struct {
				File string `json:"file"`
				*espimage.Image
				Verified string `json:"signature_check,omitempty"`
			}{name, img, verdict}, "", "  ")
			fmt.Println(string(out))
			continue
		}
		fmt.Println(name)
		espimage.Describe(os.Stdout, img)
		if verdict != "" {
			fmt.Printf("  %-15s %s\n", "signature:", verdict)
			if cores := espimage.ESP8266Cores(how); cores != "" && img.Family == espimage.ESP8266 {
				fmt.Printf("  %-15s %s\n", "accepted by:", cores)
			}
		}
	}
	if failed > 0 {
		return cli.Exit("", 1)
	}
	return nil
}

// inspectFilesystem describes a filesystem image (what updateFS() and
// updateSpiffs() flash): its kind, size and digests.
func inspectFilesystem(name string, b []byte, fsi *fsimage.Image, asJSON bool) {
	md5sum, sha := md5.Sum(b), sha256.Sum256(b)
	if asJSON {
		out, _ := json.MarshalIndent(struct {
			File       string         `json:"file"`
			Filesystem *fsimage.Image `json:"filesystem"`
			Size       int            `json:"size"`
			MD5        string         `json:"md5"`
			SHA256     string         `json:"sha256"`
		}{name, fsi, len(b), hex.EncodeToString(md5sum[:]), hex.EncodeToString(sha[:])}, "", "  ")
		fmt.Println(string(out))
		return
	}
	fmt.Println(name)
	fmt.Printf("  %-15s %s\n", "filesystem:", fsi.Describe())
	fmt.Printf("  %-15s %d bytes\n", "size:", len(b))
	fmt.Printf("  %-15s %x\n", "md5:", md5sum)
	fmt.Printf("  %-15s %x\n", "sha256:", sha)
	fmt.Printf("  %-15s %s\n", "served to:", "updateFS() / updateSpiffs() (mode spiffs); /update gives it when named after a project")
}

// flashTray is `otabox flash`: the parts, the slots, one row per board.
func flashTray(c *cli.Context) error {
	slots, err := tray.ParseSlots(c.StringSlice("port"))
	if err != nil {
		return cli.Exit("otabox flash: "+err.Error(), 2)
	}
	var parts []tray.Part
	add := func(offset uint32, file string) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		parts = append(parts, tray.NewPart(offset, filepath.Base(file), b))
		return nil
	}
	if img := c.String("image"); img != "" {
		if err := add(0, img); err != nil {
			return cli.Exit("otabox flash: "+err.Error(), 2)
		}
	}
	for _, a := range c.Args().Slice() {
		off, file, err := tray.ParsePart(a)
		if err == nil {
			err = add(off, file)
		}
		if err != nil {
			return cli.Exit("otabox flash: "+err.Error(), 2)
		}
	}
	plan := tray.Fixed(parts)
	switch m := c.String("manifest"); {
	case m != "" && len(parts) > 0:
		return cli.Exit("otabox flash: give --manifest, or --image / OFFSET=FILE parts, not both", 2)
	case m != "":
		if plan, err = tray.ManifestPlan(m); err != nil {
			return cli.Exit("otabox flash: "+err.Error(), 2)
		}
	case len(parts) == 0:
		return cli.Exit("otabox flash: nothing to write: give --image FILE, OFFSET=FILE parts or --manifest FILE", 2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.String("batch") != "" && c.Bool("no-record") {
		return cli.Exit("otabox flash: --batch records the boards; it cannot go with --no-record", 2)
	}
	// The record is opened first: a batch that is not open stops the run
	// before a board is touched.
	var rec *store.FlashRecord
	dir := writeDataDir(c)
	if dir != "" && !c.Bool("no-record") {
		if rec, err = store.OpenFlashRecord(dir, c.String("batch")); err != nil {
			return cli.Exit("otabox flash: "+err.Error(), 1)
		}
		defer rec.Close()
	}
	params := tray.FlashParams{Mode: c.String("flash-mode"), Size: c.String("flash-size"), Freq: c.String("flash-freq")}
	if err := params.Check(); err != nil {
		return cli.Exit("otabox flash: "+err.Error(), 2)
	}
	live := tray.NewLive()
	opts := tray.Options{Parallel: c.Int("parallel"), Baud: c.Int("baud"), Progress: live.Progress, Detected: live.Detected, Flash: params, Batch: c.String("batch")}
	switch where := c.String("board-data"); {
	case where != "":
		if opts.BoardData, err = tray.ParseBoardData(where, c.StringSlice("board-value")); err != nil {
			return cli.Exit("otabox flash: "+err.Error(), 2)
		}
	case len(c.StringSlice("board-value")) > 0:
		return cli.Exit("otabox flash: --board-value needs --board-data OFFSET:SIZE, where its partition is", 2)
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	if rec == nil || c.String("batch") == "" {
		close(stopped)
	} else {
		// The station page follows the tray: each board's bytes, once a second.
		go func() {
			defer close(stopped)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case now := <-t.C:
					rec.Progress(now, live.Snapshot())
				}
			}
		}()
	}
	rows := tray.Flash(ctx, slots, plan, opts)
	close(done)
	<-stopped
	if err := tray.WriteRows(os.Stdout, rows, c.Bool("json")); err != nil {
		return err
	}
	if rec != nil {
		if err := rec.Done(tray.Record(rows, plan)); err != nil {
			return cli.Exit("otabox flash: the boards are flashed, but not recorded: "+err.Error(), 1)
		}
		boards := "boards"
		if len(rows) == 1 {
			boards = "board"
		}
		fmt.Fprintf(os.Stderr, "otabox: recorded %d %s in %s\n", len(rows), boards, filepath.Join(dir, store.FileName))
	}
	for _, r := range rows {
		if !r.Passed {
			return cli.Exit("", 1)
		}
	}
	return nil
}

// readKeys reads --verify-key / --key files.
func readKeys(paths []string) ([]*espimage.Key, error) {
	var keys []*espimage.Key
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		k, err := espimage.ParseKey(filepath.Base(p), b)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// flagsFirst lets flags follow a command's arguments (`otabox history MAC
// --json`, `otabox inspect fw.bin --json`): urfave/cli stops reading flags
// at the first argument, so each command's flags are moved in front of its
// arguments. Everything after "--" stays as it is.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 3 {
		return args
	}
	var cmd *cli.Command
	i := 1
	for ; i < len(args) && cmd == nil; i++ {
		if !strings.HasPrefix(args[i], "-") {
			cmd = app.Command(args[i])
			if cmd == nil {
				return args
			}
		}
	}
	if cmd == nil {
		return args
	}
	// `otabox batch start NAME --image X`: the flags are the subcommand's.
	for i < len(args) && len(cmd.Subcommands) > 0 {
		sub := cmd.Command(args[i])
		if sub == nil {
			break
		}
		cmd, i = sub, i+1
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	out := append([]string(nil), args[:i]...)
	var rest []string
	for j := i; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			rest = append(rest, args[j:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		name, _, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
		out = append(out, a)
		if takesValue[name] && !inline && j+1 < len(args) {
			j++
			out = append(out, args[j])
		}
	}
	return append(out, rest...)
}
