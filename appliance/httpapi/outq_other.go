//go:build !linux

package httpapi

import "errors"

// outq is unknown off Linux: progress counts bytes written.
func outq(uintptr) (int, error) { return 0, errors.New("no SIOCOUTQ here") }

func sndbuf(uintptr) (int, error) { return 0, errors.New("no SO_SNDBUF here") }

func cork(uintptr, bool) error { return errors.New("no TCP_CORK here") }
