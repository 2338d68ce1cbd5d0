// Package dispatch hands a front end's inference request to the model version that serves it
// now: it resolves the model and version in the repository, checks the request against that
// version's signature, and queues it through the scheduler; when the version was replaced or
// unloaded between the lookup and the hand-off (the request never ran), it resolves again, so
// that a model swap drops no request. The HTTP API and the gRPC front end both run their
// requests through it, so the hand-off and its counting rule are written once.
//
// It decodes no wire format and maps no error to a status: errors come back as the
// repository, the version's checks and the scheduler returned them, for each front end's own
// mapping.
package dispatch

import (
	"context"
	"errors"

	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// Resolver finds the version that serves a model (models.Repository).
type Resolver interface {
	Resolve(name, version string) (*models.Version, error)
}

// Inferer queues and runs a checked request on a version (scheduler.Scheduler).
type Inferer interface {
	Infer(ctx context.Context, t scheduler.Target, req *scheduler.Request) ([]tensor.Tensor, error)
}

// maxResolves bounds how often one request re-resolves a version that was replaced under it.
const maxResolves = 3

// Result is how a dispatched request ended.
type Result struct {
	// Version is the version the request resolved to last; nil when none was resolved.
	Version *models.Version
	// Outputs are the request's outputs when Err is nil.
	Outputs []tensor.Tensor
	// Refused is set when the request ended before the scheduler admitted it (no such model
	// or version, a version that is not ready, inputs that do not fit it, a version that stayed
	// stopped): the scheduler did not count it, so the front end counts it, once. Requests the
	// scheduler admitted are in its statistics whatever their outcome.
	Refused bool
	Err     error
}

// Run resolves model at version ("" = the newest ready one), checks req against it and runs
// it through infer. ctx bounds the wait in the queue: a caller that leaves leaves the queue.
func Run(ctx context.Context, repo Resolver, infer Inferer, model, version string, req *scheduler.Request) Result {
	for attempt := 1; ; attempt++ {
		v, err := repo.Resolve(model, version)
		if err != nil {
			return Result{Refused: true, Err: err}
		}
		if err := v.CheckRequest(req.Inputs, req.Outputs); err != nil {
			return Result{Version: v, Refused: true, Err: err}
		}
		outputs, err := infer.Infer(ctx, v, req)
		if errors.Is(err, scheduler.ErrStopped) {
			if v.Retired() && attempt < maxResolves {
				continue
			}
			return Result{Version: v, Refused: true, Err: err}
		}
		return Result{Version: v, Outputs: outputs, Err: err}
	}
}
