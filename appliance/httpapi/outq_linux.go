package httpapi

import "golang.org/x/sys/unix"

// outq is the socket's send queue: bytes written, not yet acknowledged.
func outq(fd uintptr) (int, error) { return unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }

// sndbuf is the socket's send buffer size as the kernel reports it (twice
// the payload it holds, for its bookkeeping).
func sndbuf(fd uintptr) (int, error) {
	return unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
}

// cork holds (on) or releases (off) the socket's partial frames: the
// kernel sends what is held when it is released, or after 200 ms.
func cork(fd uintptr, on bool) error {
	v := 0
	if on {
		v = 1
	}
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, v)
}
