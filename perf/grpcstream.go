package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

// paramErrorCode is the response parameter in which inferd's stream error responses name the
// gRPC code ("INVALID_ARGUMENT"), so that stream failures are counted by code as unary ones are.
const paramErrorCode = "error_code"

// grpcStream carries one step's requests on one ModelStreamInfer stream. Each sender has at
// most one request in flight on it, so the step's concurrency is the number of requests in
// flight on the stream; responses come back in the order the server finishes them and are
// matched to their senders by id. Should the server end the stream (a drain, a broken
// connection), the requests waiting on it fail with its status and the next request opens a
// new stream (counted in Step.Streams).
type grpcStream struct {
	target  *grpcTarget
	ctx     context.Context // the step's: streams end with it
	timeout time.Duration

	mu     sync.Mutex // guards cur and opened
	cur    *streamConn
	opened int
}

// streamConn is one open stream and the senders waiting on it.
type streamConn struct {
	stream pb.GRPCInferenceService_ModelStreamInferClient
	cancel context.CancelFunc
	sendMu sync.Mutex // gRPC allows one sender at a time

	waitMu  sync.Mutex
	waiters map[string]chan *pb.ModelStreamInferResponse

	done chan struct{} // closed when the stream ended; err says how
	err  error
}

func newGRPCStream(ctx context.Context, target *grpcTarget, timeout time.Duration) *grpcStream {
	return &grpcStream{target: target, ctx: ctx, timeout: timeout}
}

// conn is the open stream, opening one if there is none or the last one ended.
func (g *grpcStream) conn() (*streamConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.cur; c != nil {
		select {
		case <-c.done:
		default:
			return c, nil
		}
	}
	ctx, cancel := context.WithCancel(g.ctx)
	stream, err := g.target.client.ModelStreamInfer(ctx, grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		cancel()
		return nil, err
	}
	c := &streamConn{stream: stream, cancel: cancel, waiters: map[string]chan *pb.ModelStreamInferResponse{}, done: make(chan struct{})}
	g.cur = c
	g.opened++
	go c.receive()
	return c, nil
}

// receive hands each response to the sender waiting for its id until the stream ends.
// Responses nobody waits for (their sender gave up) are dropped.
func (c *streamConn) receive() {
	for {
		r, err := c.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the server ended the stream")
			}
			c.err = err
			close(c.done)
			return
		}
		id := r.GetInferResponse().GetId()
		c.waitMu.Lock()
		ch := c.waiters[id]
		delete(c.waiters, id)
		c.waitMu.Unlock()
		if ch != nil {
			ch <- r // buffered for the one response
		}
	}
}

func (c *streamConn) forget(id string) {
	c.waitMu.Lock()
	delete(c.waiters, id)
	c.waitMu.Unlock()
}

// close ends the stream once the step's senders are done, and says how many streams the step
// opened. A nil g has none.
func (g *grpcStream) close() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.cur; c != nil {
		c.sendMu.Lock()
		_ = c.stream.CloseSend()
		c.sendMu.Unlock()
		c.cancel()
		<-c.done
	}
	return g.opened
}

// send sends the request with this id (the caller's, unique on the stream) and waits for its
// response.
// kind is "" on success, else the status code's Go name ("InvalidArgument": from the error
// response's error_code, or the stream's status when it ended) or "invalid response".
func (g *grpcStream) send(ctx context.Context, id string, checked *bool) (kind, msg string) {
	c, err := g.conn()
	if err != nil {
		return statusKind(err)
	}
	ch := make(chan *pb.ModelStreamInferResponse, 1)
	c.waitMu.Lock()
	c.waiters[id] = ch
	c.waitMu.Unlock()
	c.sendMu.Lock()
	err = c.stream.SendMsg(g.target.withID(id))
	c.sendMu.Unlock()
	if err != nil {
		// Send's error is io.EOF when the stream ended; its status comes from Recv.
		c.forget(id)
		<-c.done
		return statusKind(c.err)
	}
	timer := time.NewTimer(g.timeout)
	defer timer.Stop()
	var r *pb.ModelStreamInferResponse
	select {
	case r = <-ch:
	case <-c.done:
		c.forget(id)
		return statusKind(c.err)
	case <-timer.C:
		c.forget(id)
		return codes.DeadlineExceeded.String(), fmt.Sprintf("no response on the stream within %s", g.timeout)
	case <-ctx.Done():
		c.forget(id)
		return statusKind(ctx.Err())
	}
	if r.ErrorMessage != "" {
		return streamErrorKind(r), r.ErrorMessage
	}
	if !*checked {
		outs, err := kservegrpc.DecodeResponse(r.GetInferResponse())
		if err != nil {
			return "invalid response", err.Error()
		}
		if len(outs) == 0 {
			return "invalid response", ErrResponse.Error() + ": no outputs"
		}
		*checked = true
	}
	return "", ""
}

func statusKind(err error) (kind, msg string) {
	st := status.Convert(err)
	return st.Code().String(), st.Message()
}

// streamErrorKind names the code of a stream's error response as statusKind names a unary
// call's ("InvalidArgument" from error_code INVALID_ARGUMENT); "stream error" for a server that
// does not say.
func streamErrorKind(r *pb.ModelStreamInferResponse) string {
	name := r.GetInferResponse().GetParameters()[paramErrorCode].GetStringParam()
	flat := strings.ReplaceAll(name, "_", "")
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if name != "" && strings.EqualFold(flat, c.String()) {
			return c.String()
		}
	}
	return "stream error"
}

// streamID is the id of a sender's seq-th request: unique on the stream.
func streamID(sender int, seq uint64) string {
	return strconv.Itoa(sender) + "-" + strconv.FormatUint(seq, 10)
}
