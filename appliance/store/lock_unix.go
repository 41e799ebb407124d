//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile marks a data dir in use: a server holds a shared lock on it
// for as long as its store is open, and otabox restore takes it
// exclusively, so that a record is never replaced under a running
// server. (flock(2) locks are independent of SQLite's own fcntl locks.)
const LockFile = "otabox.lock"

// ErrInUse says a server has the data dir open.
var ErrInUse = errors.New("an otabox server has this data dir open")

func lockDir(dir string, how int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// LockExclusive takes dir for a command that replaces its record; close
// the file to release it. It fails with ErrInUse while a server runs.
func LockExclusive(dir string) (*os.File, error) { return lockDir(dir, syscall.LOCK_EX) }

func lockShared(dir string) (*os.File, error) { return lockDir(dir, syscall.LOCK_SH) }
