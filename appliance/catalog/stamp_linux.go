package catalog

import (
	"io/fs"
	"syscall"
	"time"
)

func sysStamp(info fs.FileInfo, s *Stamp) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		statStamp(st, s)
	}
}

// statStamp adds what only the system's stat gives: change time, inode,
// device and link count.
func statStamp(st *syscall.Stat_t, s *Stamp) {
	s.Ctime = int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec) // int32 fields on 32-bit ARM
	s.Ino, s.Dev, s.Nlink = uint64(st.Ino), uint64(st.Dev), uint64(st.Nlink)
}

// fstamp is the stamp of a pinned file, from fstat into a value on the
// stack: Changed runs twice per chunk of every download, and os.File.Stat
// allocates a FileInfo each time (with a thousand slow devices, the most
// of what a running download allocated). Call it with p.mu held.
func fstamp(p *pinned) (Stamp, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(p.fd, &st); err != nil {
		return Stamp{}, err
	}
	s := Stamp{Size: st.Size, ModTime: time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec))}
	statStamp(&st, &s)
	return s, nil
}
