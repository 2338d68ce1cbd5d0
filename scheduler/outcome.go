package scheduler

import "slices"

// Outcome is how an inference request ended, wherever it ended. Every request ends in exactly
// one, counted once: the scheduler counts the requests it admits (Snapshot.Outcomes), a front
// end those it refuses before it hands them over. A request Infer refuses with ErrStopped was
// not admitted: its caller resolves the model version again and tries there, or counts it as
// OutcomeUnavailable.
type Outcome int

// Outcomes, in the order metrics lists them.
const (
	OutcomeSuccess     Outcome = iota // it ran and got its outputs
	OutcomeClientError                // malformed or invalid (in the scheduler: ErrInvalidRequest)
	OutcomeNotFound                   // unknown model or version (front ends only)
	OutcomeUnavailable                // the model version is not ready or stops, or the server does (front ends only)
	OutcomeQueueFull                  // refused at once, the queue was full (ErrQueueFull)
	OutcomeTimeout                    // its timeout passed while it waited (ErrTimeout)
	OutcomeCanceled                   // the client left while it waited, or every client of its batch left and the run was stopped
	OutcomeServerError                // the batch it ran in failed (engine error, ErrBatch, ErrRunTimeout, a drain out of time), or a front end failed
	NumOutcomes
)

// outcomeNames are the values of inferd_inference_requests_total's outcome label; they are
// spelled here only (docs/metrics.md lists them).
var outcomeNames = [NumOutcomes]string{
	OutcomeSuccess:     "success",
	OutcomeClientError: "client_error",
	OutcomeNotFound:    "not_found",
	OutcomeUnavailable: "unavailable",
	OutcomeQueueFull:   "queue_full",
	OutcomeTimeout:     "timeout",
	OutcomeCanceled:    "canceled",
	OutcomeServerError: "server_error",
}

// String is the outcome's name in metrics.
func (o Outcome) String() string {
	if o < 0 || o >= NumOutcomes {
		return "unknown"
	}
	return outcomeNames[o]
}

// OutcomeNames returns the name of every outcome, in order: the label values a metrics
// collector reports for every model version, zero or not.
func OutcomeNames() []string { return slices.Clone(outcomeNames[:]) }
