package catalog

import (
	"io/fs"
	"time"
)

// Stamp tells whether a file may have changed without reading it: its
// size and modification time, and where the system gives them its change
// time (which cp -p, rsync -a and touch cannot set back), inode and device
// (a file replaced by a rename is a new inode). Two equal stamps mean the
// content is the one read before; anything else is read and hashed again.
type Stamp struct {
	Size    int64
	ModTime time.Time
	Ctime   int64 // ns; 0 where the system gives none
	Ino     uint64
	Dev     uint64
	// Nlink is the link count, not compared by Equal: an unlink or a
	// rename over the path changes the inode's ctime, not its bytes (see
	// Entry.Changed).
	Nlink uint64
}

// StampOf is the stamp of a file as fs.Stat described it.
func StampOf(info fs.FileInfo) Stamp {
	s := Stamp{Size: info.Size(), ModTime: info.ModTime()}
	sysStamp(info, &s)
	return s
}

// Equal compares stamps (time.Time by instant, not representation).
func (s Stamp) Equal(o Stamp) bool {
	return s.Size == o.Size && s.ModTime.Equal(o.ModTime) && s.Ctime == o.Ctime && s.Ino == o.Ino && s.Dev == o.Dev
}
