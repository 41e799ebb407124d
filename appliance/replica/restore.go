package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/benbjohnson/litestream"
)

// ErrNoRecord says the replica holds no record (nothing was ever
// replicated there, or the URL names another folder).
var ErrNoRecord = errors.New("the replica holds no fleet record")

// Restored is what a restore brought back.
type Restored struct {
	// TXID is the record's last transaction in the replica.
	TXID uint64
	// Updated is when the replica last received a transaction.
	Updated time.Time
}

// Restore writes the record the replica at o.URL holds to path, which
// must not exist: the caller moves a record there aside first. The file
// appears whole or not at all (Litestream writes beside it and renames)
// and passes SQLite's quick_check.
func Restore(ctx context.Context, o Options, path string) (Restored, error) {
	c, err := client(o)
	if err != nil {
		return Restored{}, err
	}
	if _, err := os.Lstat(path); err == nil {
		return Restored{}, fmt.Errorf("restore %s: %s exists", Redacted(o.URL), path)
	}
	if err := c.Init(ctx); err != nil {
		return Restored{}, fmt.Errorf("replica %s: %w", Redacted(o.URL), err)
	}
	r := litestream.NewReplicaWithClient(nil, c)
	var updated time.Time
	if _, u, err := r.TimeBounds(ctx); err == nil {
		updated = u
	}
	opt := litestream.NewRestoreOptions()
	opt.OutputPath = path
	opt.IntegrityCheck = litestream.IntegrityCheckQuick
	if err := r.Restore(ctx, opt); err != nil {
		if errors.Is(err, litestream.ErrTxNotAvailable) || errors.Is(err, litestream.ErrNoSnapshots) {
			return Restored{}, fmt.Errorf("replica %s: %w", Redacted(o.URL), ErrNoRecord)
		}
		return Restored{}, fmt.Errorf("restore from %s: %w", Redacted(o.URL), err)
	}
	var txid uint64
	for level := 0; level <= litestream.SnapshotLevel; level++ {
		if info, err := r.MaxLTXFileInfo(ctx, level); err == nil {
			txid = max(txid, uint64(info.MaxTXID))
		}
	}
	return Restored{TXID: txid, Updated: updated}, nil
}
