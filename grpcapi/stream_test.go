package grpcapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/internal/testmodels"
)

// One stream carries many requests at once; each is answered by id, the bad ones in their own
// error response, and the stream stays open until the client closes its side.
func TestStreamManyInFlight(t *testing.T) {
	s := serve(t, slowRepository(t), nil)
	c := s.client(t)
	ctx := ctxT(t)
	stream, err := c.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	want := map[string][]float32{}
	bad := map[string]string{}
	for i := range n {
		id := fmt.Sprint("req-", i)
		x := []float32{float32(i), 1, 2, 3}
		m := mlpRequest(id, x...)
		switch i % 8 {
		case 3:
			m.Inputs[0].Shape = []int64{1, 5} // does not fit the model
			bad[id] = "INVALID_ARGUMENT"
		case 5:
			m.ModelName = "nope"
			bad[id] = "NOT_FOUND"
		case 7:
			m.RawInputContents[0] = m.RawInputContents[0][:8]
			bad[id] = "INVALID_ARGUMENT"
		default:
			want[id] = testmodels.MLPForward(x)
		}
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d responses: %v", len(seen), err)
		}
		id := r.InferResponse.GetId()
		if seen[id] {
			t.Errorf("%s answered twice", id)
		}
		seen[id] = true
		if code, isBad := bad[id]; isBad {
			if r.ErrorMessage == "" || r.InferResponse.Parameters[grpcapi.ParamErrorCode].GetStringParam() != code {
				t.Errorf("%s: %q %v, want an error with code %s", id, r.ErrorMessage, r.InferResponse.Parameters, code)
			}
			continue
		}
		if r.ErrorMessage != "" || !close32(float32s(r.InferResponse.RawOutputContents[0]), want[id]) {
			t.Errorf("%s: %q %v", id, r.ErrorMessage, r.InferResponse)
		}
	}
	if len(seen) != n {
		t.Errorf("%d responses, want %d", len(seen), n)
	}
	if got := s.codeCount("ModelStreamInfer", codes.OK); got != n-len(bad) {
		t.Errorf("observed %d OK stream requests, want %d", got, n-len(bad))
	}
}

// A slow request does not hold up the ones behind it on the same stream: responses come as
// requests finish. Leaving the stream stops the slow run.
func TestStreamAnswersOutOfOrder(t *testing.T) {
	s := serve(t, slowRepository(t), nil)
	c := s.client(t)
	sctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	stream, err := c.ModelStreamInfer(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(slowRequest("slow", 1<<50, nil)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stream.Send(mlpRequest(fmt.Sprint("fast-", i), 1, 2, 3, 4)); err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil || r.InferResponse.GetId() != fmt.Sprint("fast-", i) || r.ErrorMessage != "" {
			t.Fatalf("response %d: %v %v, want fast-%d first", i, r, err, i)
		}
	}
	cancel()
	if _, err := stream.Recv(); codeOf(err) != codes.Canceled {
		t.Errorf("after cancel: %v", err)
	}
	v, _ := s.repo.Resolve("slow", "")
	waitIdle(t, s, v)
}
