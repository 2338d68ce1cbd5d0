//go:build e2e

package e2e

import "github.com/inferd/inferd/internal/testmodels"

// endlessLoop: a Loop with a huge constant trip count, so warmup never ends.
func endlessLoop() []byte { return testmodels.Endless() }

// loopFromInput: "input" FP32 [batch,4], "n" INT64 [batch]; the run loops max(n) times.
func loopFromInput() []byte { return testmodels.Steered() }
