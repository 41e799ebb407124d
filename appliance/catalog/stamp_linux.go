package catalog

import (
	"io/fs"
	"syscall"
)

func sysStamp(info fs.FileInfo, s *Stamp) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		s.Ctime = int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec) // int32 fields on 32-bit ARM
		s.Ino, s.Dev, s.Nlink = uint64(st.Ino), uint64(st.Dev), uint64(st.Nlink)
	}
}
