package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS flushes every file written on the file system that holds path,
// in one call: for a batch of copies, one flush instead of one per file.
func syncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
