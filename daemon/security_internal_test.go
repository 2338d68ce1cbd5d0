package daemon

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestLimitListener: with two connections open a third is not accepted until one closes, and
// closing the listener frees an Accept that waits for a slot.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitListener(inner, 2)
	accepted := make(chan net.Conn, 3)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	first, second := <-accepted, <-accepted
	dial() // completes in the kernel's backlog, but is not accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(200 * time.Millisecond): // how long "not accepted" is watched
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting connection was not accepted after one closed")
	}
	// Closing twice releases the slot once (a second release would block). At most the slot of
	// the Accept in progress stays held: one is taken before the kernel is asked for the next
	// connection.
	second.Close()
	second.Close()
	if got := len(ln.(*limited).slots); got > 1 {
		t.Fatalf("%d slots held after every connection closed, want at most 1 (the pending Accept)", got)
	}

	// Fill the slots again, then close the listener while Accept waits for one.
	dial()
	dial()
	<-accepted
	<-accepted
	dial()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still waits after Close")
	}
}
