package worker

import (
	"errors"
	"io"
	"testing"
)

// A closed conn never reaches the socket that reuses its descriptor number: a late read (the
// reader of a worker that died, looping once more) gets EOF instead of the next worker's
// frames, and a late write fails instead of landing in the next worker's socket.
func TestClosedConnDoesNotReachAReusedDescriptor(t *testing.T) {
	old, oldPeer, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer oldPeer.close()
	fd := old.fd
	old.close()
	next, nextPeer, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer next.close()
	defer nextPeer.close()
	if next.fd != fd && nextPeer.fd != fd {
		t.Logf("descriptor %d was not reused (%d, %d): the check below still holds", fd, next.fd, nextPeer.fd)
	}
	if err := nextPeer.write(nil, func(e *encoder) { e.u8(kindHello) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.read(); !errors.Is(err, io.EOF) {
		t.Errorf("read on a closed conn: %v, want EOF", err)
	}
	if b, _, err := next.read(); err != nil || len(b) != 1 || b[0] != kindHello {
		t.Errorf("the next socket's frame: %v, %v (taken by the closed conn?)", b, err)
	}
	if err := old.write(nil, func(e *encoder) { e.u8(kindHello) }); err == nil {
		t.Error("write on a closed conn succeeded")
	}
}
