package grpcapi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// errStopping refuses requests once shutdown began.
var errStopping = errors.New("server is shutting down")

// codeOf maps an error from decoding, the repository, the scheduler or the engine to a gRPC
// code: the one place that decides it.
func codeOf(err error) codes.Code {
	if st, ok := status.FromError(err); ok && err != nil {
		return st.Code() // an answer that came with its code (a peer's, in cluster mode)
	}
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, kserve.ErrInvalidRequest), errors.Is(err, models.ErrInvalidInput),
		errors.Is(err, scheduler.ErrInvalidRequest):
		return codes.InvalidArgument
	case errors.Is(err, models.ErrModelNotFound), errors.Is(err, models.ErrVersionNotFound):
		return codes.NotFound
	case errors.Is(err, scheduler.ErrQueueFull):
		return codes.ResourceExhausted
	case errors.Is(err, scheduler.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, models.ErrUnavailable), errors.Is(err, scheduler.ErrStopped), errors.Is(err, errStopping):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	default:
		return codes.Internal
	}
}

// statusError is err as the status the client gets, with err's text as its message.
func statusError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

// outcomeOf is the outcome of an inference request refused here with code: codeOf is the one
// mapping from an error to a code, and this the one from a code to an outcome (docs/grpc.md).
func outcomeOf(code codes.Code) scheduler.Outcome {
	switch code {
	case codes.NotFound:
		return scheduler.OutcomeNotFound
	case codes.Unavailable:
		return scheduler.OutcomeUnavailable
	case codes.Canceled, codes.DeadlineExceeded:
		return scheduler.OutcomeCanceled
	case codes.Internal, codes.Unknown:
		return scheduler.OutcomeServerError
	default:
		return scheduler.OutcomeClientError
	}
}
