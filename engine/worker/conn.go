package worker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxFrame bounds a frame's payload: control messages and tensor metadata are small, and tensor
// bytes travel through the arena. A peer that announces more is broken or hostile.
const maxFrame = 64 << 20

// errFrame is wrapped by every protocol violation seen on a connection.
var errFrame = errors.New("worker protocol error")

// conn is one end of a Unix stream socketpair, used with blocking system calls: the goroutine
// that reads holds its thread while it waits, which costs less latency than the runtime's
// poller on a path that alternates a few microseconds of work with a wait. Reads come from one
// goroutine at a time, writes are serialized by wmu, and shutdown wakes a blocked reader.
type conn struct {
	fd int
	// fdMu is held shared by every system call on fd and exclusively by the close that
	// releases it: a descriptor number is reused by the next socket opened, so no call may
	// reach fd once it is closed (a late read would take another worker's frames). closed is
	// guarded by it.
	fdMu   sync.RWMutex
	closed bool

	wmu  sync.Mutex
	wbuf []byte

	rbuf []byte // bytes read and not yet returned: rbuf[roff:rend]
	roff int
	rend int
	oob  []byte

	closeOnce sync.Once

	// spin is how long a read polls before it blocks (0: it blocks at once).
	spin time.Duration

	// mem, when set, carries the bytes instead of the socket (fd is then no descriptor): the
	// supervisor tests' fake worker, in a synctest bubble where a goroutine blocked in a system
	// call would stall the fake clock.
	mem pipe
}

// pipe is an in-memory stand-in for a connected stream socket. It carries no descriptors.
type pipe interface {
	// recv blocks for bytes and returns how many it put in b; 0 and no error once either end
	// has shut the pipe down.
	recv(b []byte) (int, error)
	// send queues b (the pipe keeps a copy), or fails once the pipe is shut down.
	send(b []byte) error
	// shutdown wakes both ends' readers and fails later sends.
	shutdown()
}

func newConn(fd int) *conn {
	return &conn{fd: fd, rbuf: make([]byte, 64<<10), oob: make([]byte, unix.CmsgSpace(4*4))}
}

// socketpair returns two connected conns with close-on-exec set.
func socketpair() (*conn, *conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return newConn(fds[0]), newConn(fds[1]), nil
}

// write sends one frame whose payload the caller built with build; fds, if any, ride along.
func (c *conn) write(fds []int, build func(e *encoder)) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	e := encoder{b: append(c.wbuf[:0], 0, 0, 0, 0)}
	build(&e)
	b := e.b
	c.wbuf = b[:0]
	if len(b)-4 > maxFrame {
		return fmt.Errorf("%w: frame of %d bytes is over %d", errFrame, len(b)-4, maxFrame)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)-4))
	if c.mem != nil {
		return c.mem.send(b)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if !c.use() {
		return fmt.Errorf("send: %w", unix.EBADF)
	}
	defer c.fdMu.RUnlock()
	for len(b) > 0 || oob != nil {
		n, err := unix.SendmsgN(c.fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		b, oob = b[n:], nil
	}
	return nil
}

// read returns the next frame's payload (valid until the next read) and the descriptors that
// came with it. It returns io.EOF once the peer has closed its end.
func (c *conn) read() ([]byte, []int, error) {
	var fds []int
	for {
		need := 4
		if avail := c.rend - c.roff; avail >= 4 {
			n := int(binary.LittleEndian.Uint32(c.rbuf[c.roff:]))
			if n > maxFrame {
				return nil, fds, fmt.Errorf("%w: frame of %d bytes is over %d", errFrame, n, maxFrame)
			}
			if avail >= 4+n {
				p := c.rbuf[c.roff+4 : c.roff+4+n]
				c.roff += 4 + n
				return p, fds, nil
			}
			need = 4 + n
		}
		if len(c.rbuf)-c.roff < need {
			c.compact(need)
		}
		n, oobn, err := c.recv()
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EBADF) {
				return nil, fds, io.EOF
			}
			return nil, fds, fmt.Errorf("recv: %w", err)
		}
		if oobn > 0 {
			got, err := parseRights(c.oob[:oobn])
			if err != nil {
				return nil, fds, err
			}
			fds = append(fds, got...)
		}
		if n == 0 {
			return nil, fds, io.EOF
		}
		c.rend += n
	}
}

// recv reads what the socket has. With spin set it first polls without blocking for up to
// spin: a reply that comes within microseconds is then taken without the wakeup of a thread
// blocked in the kernel, which on a virtual machine costs tens of microseconds per crossing.
func (c *conn) recv() (n, oobn int, err error) {
	if c.mem != nil {
		n, err = c.mem.recv(c.rbuf[c.rend:])
		return n, 0, err
	}
	if !c.use() {
		return 0, 0, unix.EBADF
	}
	defer c.fdMu.RUnlock()
	if c.spin > 0 {
		deadline := time.Now().Add(c.spin)
		for {
			n, oobn, _, _, err = unix.Recvmsg(c.fd, c.rbuf[c.rend:], c.oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
			if err != unix.EAGAIN {
				return n, oobn, err
			}
			if time.Now().After(deadline) {
				break
			}
		}
	}
	n, oobn, _, _, err = unix.Recvmsg(c.fd, c.rbuf[c.rend:], c.oob, unix.MSG_CMSG_CLOEXEC)
	return n, oobn, err
}

// compact moves unread bytes to the front, growing the buffer to hold need bytes.
func (c *conn) compact(need int) {
	unread := c.rend - c.roff
	buf := c.rbuf
	if need > len(buf) {
		buf = make([]byte, max(need, 2*len(c.rbuf)))
	}
	copy(buf, c.rbuf[c.roff:c.rend])
	c.rbuf, c.roff, c.rend = buf, 0, unread
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", errFrame, err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// shutdown wakes a reader blocked on the connection and makes later writes fail; the
// descriptor stays open until close.
func (c *conn) shutdown() {
	if c.mem != nil {
		c.mem.shutdown()
		return
	}
	if !c.use() {
		return
	}
	defer c.fdMu.RUnlock()
	_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
}

// use takes fdMu shared for a system call on fd, unless fd is closed (then it reports false
// and holds nothing).
func (c *conn) use() bool {
	c.fdMu.RLock()
	if c.closed {
		c.fdMu.RUnlock()
		return false
	}
	return true
}

// release closes this process's descriptor without shutting the socket down: for an end that
// was handed to another process, which keeps using the socket.
func (c *conn) release() {
	if c.mem != nil {
		return // the fake worker holds the other end itself
	}
	c.closeOnce.Do(c.closeFD)
}

// close shuts the connection down, which wakes a reader or writer blocked on it, and releases
// the descriptor once no call uses it any more; later calls fail as on a closed socket.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.shutdown()
		if c.mem == nil {
			c.closeFD()
		}
	})
}

func (c *conn) closeFD() {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	c.closed = true
	_ = unix.Close(c.fd)
}
