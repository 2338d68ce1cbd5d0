// Package rollout owns canary and blue-green rollouts of a model's versions across an inferd
// cluster: the rollout definitions (from config), the cluster-wide rollout state (one
// cluster.Record of kind "rollout" per model, gossiped by package cluster) and the Controller
// that advances it.
//
// It does not route requests, gossip, or count requests itself: it reads converged records from a
// Store, request counters from Counters, and leadership from Leader, and tells routing what to use
// through Controller.Weights. It imports only package cluster (for Record and Member).
//
// # Definition
//
// A rollout moves traffic of one model from its stable version to its canary version in steps:
//
//	[[rollout]]
//	model  = "resnet"
//	stable = "1"
//	canary = "2"
//	steps = [
//	  { set_weight = 10 },
//	  { pause = { duration = "10m" } },
//	  { analysis = { window = "1m", intervals = 3, max_error_rate = 0.01, max_p99_latency = "250ms", min_requests = 200, failure_limit = 2 } },
//	  { set_weight = 50 },
//	  { pause = {} },                   # until promoted
//	]
//
// When the steps run out the canary gets 100% (phase completed). A blue-green rollout
// (strategy = "blue_green") switches to the canary at 100% at once; its steps, if any, may only
// be pauses and analyses, run after the switch, so a failed analysis rolls back automatically
// and Abort rolls back by hand (canary 0%, stable 100%).
//
// # State machine
//
// Phases are progressing (waiting on an analysis step), paused (waiting on a pause step, or on an
// analysis that hit its inconclusive limit), and the terminal completed, promoted and aborted.
//
//	start (first sight of a definition, a changed definition, or Start) → step 0
//	set_weight                     applied at once; the next step is entered in the same write
//	pause                          paused; leaves after its duration (leader) or on Promote
//	analysis                       progressing; each window is pass, fail or inconclusive;
//	                               intervals conclusive windows with fewer than failure_limit
//	                               failures → next step; failure_limit failures → aborted;
//	                               inconclusive_limit inconclusive windows → paused
//	steps exhausted                completed, canary 100%
//	PromoteFull (not terminal)     promoted, canary 100%
//	Abort (not aborted)            aborted, canary 0%
//	Start (any phase)              step 0 again, under a new generation
//
// Every change is a new record with the previous generation + 1. On equal generations the
// Priority decides (see cluster.Record): an abort (2) outranks an operator's promote or start (1),
// which outranks the leader's automatic progress (0). So an abort racing a promote from the same
// state wins on every node, and an operator's action racing the leader's tick wins over it. An
// action based on a view older than the newest record (gossip lag) loses to that record; the CLI
// should read Status back.
//
// # Leader
//
// Any node may Start, Promote or Abort (operator intent is written directly), but only the leader
// advances steps and runs analyses. The rule offered by LowestRoutable is: the leader is the
// routable member (alive and not draining) with the lowest Name. It needs no election and every
// node with the same membership view agrees; while views differ (a partition, a join in flight)
// two nodes may both act, and the record merge rule settles it. A new leader continues from the
// converged record: pause deadlines come from the record's StepStarted (wall clock, so clocks
// should be NTP-synchronised), analysis counts of passed/failed intervals come from the record,
// and only the window in progress is restarted.
//
// # Analysis
//
// An analysis window compares two Counts snapshots of the canary version, one at the window's
// start and one at its end; the difference is the window's traffic. A window is inconclusive,
// neither pass nor fail, when it saw fewer than max(min_requests, 1) requests, when a counter went
// backwards (a restart), when the canary has no counters at the window's end (none at its
// start count as zeros: a version just loaded has served nothing), or when max_p99_latency is set and the
// counters carry no usable histogram. Inconclusive windows do not count towards intervals or
// failure_limit; they extend the analysis (or pause it at inconclusive_limit, when set). A
// conclusive window fails when its error rate exceeds max_error_rate, its mean latency exceeds
// max_mean_latency, or its p99 (interpolated within histogram buckets; beyond the largest finite
// bucket counts as infinite) exceeds max_p99_latency; otherwise it passes. Latency is judged only
// over the requests that carry one (LatencyCount): a window of nothing but errors is judged by its
// error rate. The Counters given decide whose traffic is counted: this node's own, or the
// cluster's if the daemon sums its peers'.
//
// # Threading
//
// Controller methods are safe for concurrent use. Weights is lock-free and reads a view refreshed
// by every Reconcile, by Refresh, by Status and by this node's own writes. A record that arrives by
// gossip is in force once one of those runs: the daemon calls Refresh on every change of the
// store, and without that the view lags the store by at most one Interval.
package rollout
