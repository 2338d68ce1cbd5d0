//go:build !linux

package watch

import "io/fs"

// sysStat is a no-op where the stat layout differs; size, mtime and mode still count.
func sysStat(fs.FileInfo) (ino, dev uint64, ctime int64) { return 0, 0, 0 }
