//go:build !unix

package store

import (
	"errors"
	"os"
)

// LockFile: see lock_unix.go. Without flock(2) the data dir is not
// locked, and otabox restore trusts the operator to stop the server.
const LockFile = "otabox.lock"

// ErrInUse says a server has the data dir open.
var ErrInUse = errors.New("an otabox server has this data dir open")

// LockExclusive cannot tell a running server here.
func LockExclusive(dir string) (*os.File, error) { return nil, nil }

func lockShared(dir string) (*os.File, error) { return nil, nil }
