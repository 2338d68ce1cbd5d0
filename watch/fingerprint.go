package watch

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// fingerprint is a digest of a model directory's tree. The zero value means "no such model".
type fingerprint [sha256.Size]byte

// fingerprintModel digests the stat data of every entry under dir, in sorted order. In marker
// mode, version directories without the marker are left out. Symbolic links are recorded with
// their target and the target's stat, and not followed into directories; the model directory
// itself may be a link.
func fingerprintModel(dir, marker string) fingerprint {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return fingerprint{}
	}
	h := sha256.New()
	var buf []byte
	var walk func(abs, rel string, top bool)
	walk = func(abs, rel string, top bool) {
		entries, err := os.ReadDir(abs)
		if err != nil {
			// Vanished or unreadable mid-scan: record it, so the scan is not mistaken for a
			// stable one if it keeps changing.
			buf = append(buf[:0], 'E')
			buf = append(buf, rel...)
			buf = append(buf, 0)
			h.Write(buf)
			return
		}
		for _, e := range entries {
			p := filepath.Join(abs, e.Name())
			r := e.Name()
			if rel != "" {
				r = rel + "/" + e.Name()
			}
			if e.IsDir() {
				if top && marker != "" && !exists(filepath.Join(p, marker)) {
					continue // an incomplete version: invisible until its marker appears
				}
				buf = append(buf[:0], 'D')
				buf = append(buf, r...)
				buf = append(buf, 0)
				h.Write(buf)
				walk(p, r, false)
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // vanished between ReadDir and Lstat; the next scan differs
			}
			buf = append(buf[:0], 'F')
			buf = append(buf, r...)
			buf = append(buf, 0)
			buf = appendStat(buf, info)
			if info.Mode()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(p)
				buf = append(buf, target...)
				buf = append(buf, 0)
				if ti, err := os.Stat(p); err == nil && !ti.IsDir() {
					buf = appendStat(buf, ti)
				}
			}
			h.Write(buf)
		}
	}
	walk(dir, "", true)
	var fp fingerprint
	h.Sum(fp[:0])
	if fp == (fingerprint{}) {
		fp[0] = 1 // keep zero for "absent"; a real digest of zero will not happen, but be exact
	}
	return fp
}

func appendStat(buf []byte, fi fs.FileInfo) []byte {
	ino, dev, ctime := sysStat(fi)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(fi.Size()))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(fi.ModTime().UnixNano()))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(fi.Mode()))
	buf = binary.LittleEndian.AppendUint64(buf, ino)
	buf = binary.LittleEndian.AppendUint64(buf, dev)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(ctime))
	return buf
}

// fileStat is the stat data of one file, following links; comparable.
type fileStat struct {
	exists bool
	size   int64
	mtime  int64
	mode   fs.FileMode
	ino    uint64
	dev    uint64
	ctime  int64
}

func statFile(path string) fileStat {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStat{}
	}
	ino, dev, ctime := sysStat(fi)
	return fileStat{
		exists: true,
		size:   fi.Size(),
		mtime:  fi.ModTime().UnixNano(),
		mode:   fi.Mode(),
		ino:    ino,
		dev:    dev,
		ctime:  ctime,
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }
