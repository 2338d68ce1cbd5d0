package grpcapi

import (
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/inferd/inferd/kserve/kservepb"
)

// MaxStreamInFlight bounds the requests one ModelStreamInfer stream has in flight; past it
// the stream reads no further request until one is answered (HTTP/2 flow control then holds
// the client back). The scheduler's queues bound what waits across all streams.
const MaxStreamInFlight = 1024

// ParamErrorCode is the response parameter that carries the gRPC code's name (such as
// "INVALID_ARGUMENT") in a stream's error response, so that a client can tell failures apart
// as a unary call's status would.
const ParamErrorCode = "error_code"

// ModelStreamInfer serves Triton's streaming extension: each request read from the stream runs
// on its own, and its response (or its error, in error_message) is sent as soon as it is
// ready, so responses come in the order requests finish; clients match them by id. A request
// that fails does not end the stream. The stream ends when the client closes its side and
// every request is answered, when the client leaves, or at shutdown: then it reads no more,
// answers what it has in flight and ends with UNAVAILABLE.
func (s *Server) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	ctx := stream.Context()
	reqs := make(chan *pb.ModelInferRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- m:
			case <-ctx.Done():
				s.malformed.Delete(m) // never handled: leave nothing behind
				return
			}
		}
	}()

	var (
		sendMu   sync.Mutex // gRPC allows one sender at a time
		wg       sync.WaitGroup
		inFlight = make(chan struct{}, MaxStreamInFlight)
	)
	send := func(r *pb.ModelStreamInferResponse) {
		sendMu.Lock()
		defer sendMu.Unlock()
		// A failed send means the stream is gone; the client saw its status already.
		_ = stream.Send(r)
	}
	answer := func(m *pb.ModelInferRequest) {
		defer func() { <-inFlight; wg.Done() }()
		start := time.Now()
		resp, node, err := s.infer1(ctx, "ModelStreamInfer", m)
		code := codeOf(err)
		service, method := splitMethod(pb.GRPCInferenceService_ModelStreamInfer_FullMethodName)
		s.observe(service, method, code, time.Since(start))
		if err != nil {
			params := errorParameters(code)
			setServedBy(params, node)
			send(&pb.ModelStreamInferResponse{ErrorMessage: status.Convert(err).Message(), InferResponse: &pb.ModelInferResponse{
				ModelName: m.GetModelName(), ModelVersion: m.GetModelVersion(), Id: m.GetId(),
				Parameters: params,
			}})
			return
		}
		if node != "" {
			if resp.Parameters == nil {
				resp.Parameters = map[string]*pb.InferParameter{}
			}
			setServedBy(resp.Parameters, node)
		}
		send(&pb.ModelStreamInferResponse{InferResponse: resp})
	}
	for {
		select {
		case m := <-reqs:
			select {
			case inFlight <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return status.FromContextError(ctx.Err()).Err()
			}
			wg.Add(1)
			go answer(m)
		case err := <-recvErr:
			wg.Wait()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-s.stop:
			wg.Wait()
			return status.Error(codes.Unavailable, errStopping.Error()+": the stream ends; requests sent after its last response were not run")
		case <-ctx.Done():
			wg.Wait()
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func errorParameters(code codes.Code) map[string]*pb.InferParameter {
	return map[string]*pb.InferParameter{ParamErrorCode: {ParameterChoice: &pb.InferParameter_StringParam{StringParam: CodeName(code)}}}
}

// setServedBy names the node that served a stream's request in its response's parameters.
func setServedBy(params map[string]*pb.InferParameter, node string) {
	if node != "" {
		params[ParamServedBy] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: node}}
	}
}

// CodeName is a code's name as the gRPC specification spells it: INVALID_ARGUMENT for
// codes.InvalidArgument.
func CodeName(code codes.Code) string {
	if code == codes.OK {
		return "OK"
	}
	name := code.String() // "InvalidArgument"
	out := make([]byte, 0, len(name)+4)
	for i := range len(name) {
		c := name[i]
		if 'A' <= c && c <= 'Z' && i > 0 {
			out = append(out, '_')
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}
