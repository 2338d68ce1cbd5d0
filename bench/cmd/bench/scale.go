package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The scale-down measurement (issue 16): on the MLP's out-of-the-box server, right after the
// runs at the high concurrency, the load drops to one client; the instance count calibration
// chose (inferd_model_instances) should fall within the quiet period (scaleDownAfter, plus the
// scheduler's one-second windows), and the p50 of one client afterwards should be the
// single-client figure the same server had before the load.

// scaleDownAfter is inferd's default [tuning] scale_down_after (docs/tuning.md), which the
// out-of-the-box model.toml leaves as it is.
const scaleDownAfter = 30 * time.Second

// scaleSlack is what the scale-down may take beyond the quiet period: the window that still saw
// the high load, the next one, and the poll.
const scaleSlack = 3 * time.Second

// scaleRep is one repetition of the scale-down measurement.
type scaleRep struct {
	before, after int           // instances under the high load, and once one client remains
	took          time.Duration // from the drop to one instance fewer
	single        serverRun     // one client after the scale-down
	err           error
}

// measureScaleDown drops s's load from the high concurrency (which has just run) to one
// client and times the scale-down, then measures one client again.
func (b *bench) measureScaleDown(ctx context.Context, s *server, spec modelSpec, tag func(string) string) scaleRep {
	var r scaleRep
	var err error
	if r.before, err = instancesOf(ctx, s, spec.key); err != nil {
		return scaleRep{err: err}
	}
	if r.before < 2 {
		r.after = r.before
		return r // nothing to scale down
	}
	quiet := scaleDownAfter
	longest := quiet + 4*scaleSlack
	done := make(chan serverRun, 1)
	lctx, stop := context.WithCancel(ctx) // the one client stops once the count has fallen
	defer stop()
	start := time.Now()
	go func() {
		done <- b.load(lctx, s, tag("inferd-scale-down-c1"), spec.key, spec.shape, "binary", "1",
			"--duration", longest.String(), "--warmup", "0s")
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
poll:
	for {
		select {
		case run := <-done:
			if run.err != nil {
				return scaleRep{before: r.before, err: run.err}
			}
			break poll
		case <-tick.C:
			n, err := instancesOf(ctx, s, spec.key)
			if err == nil && n < r.before {
				r.took, r.after = time.Since(start), n
				stop()
				<-done // killed: its figures are not used
				break poll
			}
		}
	}
	if r.after == 0 {
		r.after = r.before
		r.err = fmt.Errorf("still %d instances after %s of one client", r.before, longest)
		return r
	}
	r.single = b.load(ctx, s, tag("inferd-scaled-c1"), spec.key, spec.shape, "binary", "1")
	return r
}

// instancesOf reads inferd_model_instances of model from s's metrics.
func instancesOf(ctx context.Context, s *server, model string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	prefix := fmt.Sprintf("inferd_model_instances{model=%q,", model)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			return strconv.Atoi(f[len(f)-1])
		}
	}
	return 0, fmt.Errorf("no inferd_model_instances for %s in %s/metrics", model, s.url)
}

// scaleTargets are the two scale-down targets over the repetitions that scaled: the time to
// scale down against the quiet period, and one client's p50 afterwards against before.
func (m *modelResult) scaleTargets() (rows []string, ok bool) {
	var tooks []time.Duration
	var after, before []time.Duration
	var notes []string
	for i, r := range m.reps {
		switch {
		case r.scale == (scaleRep{}):
			continue // not measured for this model
		case r.scale.err != nil:
			notes = append(notes, fmt.Sprintf("rep %d: %v", i+1, r.scale.err))
		case r.scale.before < 2:
			notes = append(notes, fmt.Sprintf("rep %d: %d instance calibrated, nothing to scale down", i+1, r.scale.before))
		default:
			tooks = append(tooks, r.scale.took)
			if a, b := r.scale.single.step(1), r.batchedBinary.step(1); a != nil && b != nil {
				after, before = append(after, a.Latency.P50), append(before, b.Latency.P50)
			}
		}
	}
	if len(tooks) == 0 && len(notes) == 0 {
		return nil, false
	}
	quiet := scaleDownAfter
	if len(tooks) == 0 {
		return []string{fmt.Sprintf("| %s | scale-down after the load drops to 1 client | – | ≤ %s | not measured: %s |", m.spec.key, quiet+scaleSlack, strings.Join(notes, "; "))}, true
	}
	var parts []string
	for _, d := range tooks {
		parts = append(parts, d.Round(100*time.Millisecond).String())
	}
	took := medianDur(tooks)
	verdict := "PASS"
	if took > quiet+scaleSlack {
		verdict = "**MISS**"
	}
	if len(notes) > 0 {
		verdict += " (" + strings.Join(notes, "; ") + ")"
	}
	rows = append(rows, fmt.Sprintf("| %s | scale-down after the load drops to 1 client (quiet period %s) | %s [%s] | ≤ %s | %s |",
		m.spec.key, quiet, took.Round(100*time.Millisecond), strings.Join(parts, ", "), quiet+scaleSlack, verdict))
	if len(after) > 0 {
		a, b := medianDur(after), medianDur(before)
		bound := b + max(b/10, 50*time.Microsecond)
		verdict := "PASS"
		if a > bound {
			verdict = "**MISS**"
		}
		rows = append(rows, fmt.Sprintf("| %s | p50, binary, c=1, after the scale-down | %s [%s] | ≤ %s (before the load %s, + 10%% or 50 µs) | %s |",
			m.spec.key, usText(a), usList(after), usText(bound), usText(b), verdict))
	}
	return rows, true
}
