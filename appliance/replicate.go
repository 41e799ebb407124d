package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"otabox/appliance/replica"
	"otabox/appliance/store"
)

// restoreFirst brings the record back from the replica onto a box whose
// data dir holds none (a new SD card, a replacement box), before the
// store would start an empty one. It says why replication must be held
// back ("" when it need not): a replica that could not be read may hold
// a record, and a new one streamed over it would bury it.
func restoreFirst(dir string, o replica.Options, log *slog.Logger) (held string) {
	path := filepath.Join(dir, store.FileName)
	if _, err := os.Lstat(path); err == nil {
		return ""
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "the data dir cannot be made: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	r, err := replica.Restore(ctx, o, path)
	switch {
	case errors.Is(err, replica.ErrNoRecord):
		log.Info("replica: it holds no fleet record yet; a new one starts here and streams to it", "replica", replica.Redacted(o.URL))
		return ""
	case err != nil:
		held = "the data dir has no record and the replica could not be read to restore it (" + err.Error() + "); restart otabox once it can be, or run otabox restore"
		log.Error("replica: "+held+"; devices are served with a new record that is not replicated", "replica", replica.Redacted(o.URL))
		return held
	}
	log.Info("replica: restored the fleet record onto this box before serving", "replica", replica.Redacted(o.URL), "file", path, "txid", r.TXID, "replica_updated", r.Updated.Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond))
	return ""
}

// replicaStatus is the replica's state for the page, /metrics and
// /healthz; nil when the box was not told to replicate.
func (a *Appliance) replicaStatus() *replica.Status {
	switch {
	case a.cfg.Replica == nil:
		return nil
	case a.replicator == nil:
		return &replica.Status{URL: replica.Redacted(a.cfg.Replica.URL), Held: a.replicaHeld}
	}
	st := a.replicator.Status()
	return &st
}

// closeReplica ships the record's last transactions and stops
// replicating, after the store has committed them.
func (a *Appliance) closeReplica() {
	if a.replicator == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := a.replicator.Close(ctx); err != nil {
		a.log.Error("replica: the last transactions did not reach the replica", "err", err)
	}
}

// RestoreRecord brings the record the replica holds into dir (otabox
// restore). A record already there is replaced only with force, and is
// then moved aside whole (its database, WAL, commits file and
// Litestream's state, into replaced-TIME/), never deleted; a server
// running on dir is never replaced under (store.LockExclusive). The new
// record is written beside and renamed into place, so an interrupted
// restore leaves the old state as it was. It returns what a person
// reads: what came back and, against the record it replaces, what the
// replica lacked.
func RestoreRecord(ctx context.Context, dir string, o replica.Options, force bool) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, store.FileName)
	_, statErr := os.Lstat(path)
	if statErr == nil && !force {
		return "", fmt.Errorf("%s already holds a fleet record: give --force to replace it (it is moved aside, not deleted)", path)
	}
	lock, err := store.LockExclusive(dir)
	if err != nil {
		if errors.Is(err, store.ErrInUse) {
			return "", fmt.Errorf("%w: stop it first (systemctl stop otabox), then restore", err)
		}
		return "", err
	}
	if lock != nil {
		defer lock.Close()
	}
	oldID, oldN, oldSeen := store.CommitsSeen(dir)
	staged := filepath.Join(dir, "restoring-"+store.FileName)
	os.Remove(staged)
	r, err := replica.Restore(ctx, o, staged)
	if err != nil {
		os.Remove(staged)
		return "", err
	}
	// The old record's files go aside whole: the WAL and shm belong to
	// its database (a WAL beside no database may still hold its last
	// transactions), the commits file counts its commits, and
	// Litestream's state follows its WAL.
	var aside string
	for _, name := range []string{store.FileName, store.FileName + "-wal", store.FileName + "-shm", store.CommitsFile, "." + store.FileName + "-litestream"} {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if aside == "" {
			aside = filepath.Join(dir, "replaced-"+time.Now().UTC().Format("20060102T150405Z"))
			if err := os.Mkdir(aside, 0o750); err != nil {
				os.Remove(staged)
				return "", fmt.Errorf("moving the old record aside: %w", err)
			}
		}
		if err := os.Rename(p, filepath.Join(aside, name)); err != nil {
			return "", fmt.Errorf("moving %s aside: %w", p, err)
		}
	}
	if err := os.Rename(staged, path); err != nil {
		return "", fmt.Errorf("restored record: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "restored the fleet record from %s into %s", replica.Redacted(o.URL), path)
	rd, err := store.OpenReader(dir)
	if err != nil {
		fmt.Fprintf(&b, " (%v)", err)
	} else {
		defer rd.Close()
		c, _ := rd.Counts(ctx)
		id, n, _ := rd.Commits(ctx)
		fmt.Fprintf(&b, ": %d devices, %d events, %d commits", c.Devices, c.Events, n)
		if !r.Updated.IsZero() {
			fmt.Fprintf(&b, "; the replica last received a transaction at %s", r.Updated.UTC().Format(time.RFC3339))
		}
		switch {
		case oldSeen && oldID == id && oldN > n:
			fmt.Fprintf(&b, "\nthe record it replaces had %d commits: the last %d had not reached the replica", oldN, oldN-n)
		case oldSeen && oldID == id:
			fmt.Fprintf(&b, "\nthe record it replaces had %d commits: the replica held them all", oldN)
		case oldSeen:
			fmt.Fprintf(&b, "\nthe record it replaces was another one (%d commits)", oldN)
		}
	}
	if aside != "" {
		fmt.Fprintf(&b, "\nthe record it replaces is kept in %s", aside)
	}
	return b.String(), nil
}
