//go:build linux

package watch

import (
	"io/fs"
	"syscall"
)

// sysStat returns what a plain FileInfo lacks: the inode, the device and the ctime, so that a
// file replaced by one of the same size and mtime (cp -p, rsync -t, rename into place) or only
// chmodded still changes the fingerprint.
func sysStat(fi fs.FileInfo) (ino, dev uint64, ctime int64) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0
	}
	return st.Ino, st.Dev, st.Ctim.Nano()
}
