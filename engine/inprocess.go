package engine

import "context"

// InProcess is the Isolator of IsolationNone: every host it starts is rt itself, in the
// daemon's process. Its hosts bound nothing (a crash of ONNX Runtime is the daemon's crash),
// never restart and never give up; closing one leaves rt open.
func InProcess(rt Runtime) Isolator { return inProcess{rt} }

type inProcess struct{ rt Runtime }

func (p inProcess) Start(ctx context.Context, _ HostOptions) (Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return inProcessHost{p.rt}, nil
}

type inProcessHost struct{ Runtime }

func (inProcessHost) Status() HostStatus      { return HostStatus{} }
func (inProcessHost) Failed() <-chan struct{} { return nil }
func (inProcessHost) Err() error              { return nil }
func (inProcessHost) Close() error            { return nil }
