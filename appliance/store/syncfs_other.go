//go:build !linux

package store

import "errors"

// syncFS has no one-call flush off Linux: the batch fsyncs each file.
func syncFS(string) error { return errors.New("syncfs: Linux only") }
