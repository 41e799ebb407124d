package httpapi

import "golang.org/x/sys/unix"

// outq is the socket's send queue: bytes written, not yet acknowledged.
func outq(fd uintptr) (int, error) { return unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }
