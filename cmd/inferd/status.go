package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inferd/inferd/events"
	"github.com/inferd/inferd/status"
)

// exitNotReady is the exit status of `inferd status` when the node (or a member) is not
// ready, as systemctl is-active answers 3 for a unit that is not active.
const exitNotReady = 3

// statusFlags are status's flags.
type statusFlags struct {
	server   string
	token    string
	cluster  bool
	json     bool
	watch    bool
	interval time.Duration
	timeout  time.Duration
}

func statusCommand(env []string) *cobra.Command {
	var f statusFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what a node (or every member of its cluster) serves, how fast, and what changed",
		Long: `Show the node at --server: its state and why, its CPUs, memory and GPUs, one row per model
version (state, execution provider, instances, queue depth, requests/s, p50 and p99 over the last
minute, errors, last load, traffic weight), rollouts, and the recent events. --cluster asks every
member through that node (a member that does not answer within a short timeout shows as
unreachable). The exit status is 0 when the node (with --cluster, every member) is ready, 3 when
not, 1 when the node could not be asked. A node with tokens needs an infer token (--token or
$INFERD_TOKEN).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if f.watch {
				return f.runWatch(ctx, cmd.OutOrStdout())
			}
			ready, err := f.once(ctx, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if !ready {
				return exitCode(exitNotReady)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.server, "server", "s", cmp.Or(lookup(env)("INFERD_SERVER"), "http://127.0.0.1:8080"), "base URL of the node (default $INFERD_SERVER, else the local node)")
	fl.StringVar(&f.token, "token", lookup(env)("INFERD_TOKEN"), "bearer token (default $INFERD_TOKEN); an infer token where auth is on")
	fl.BoolVar(&f.cluster, "cluster", false, "show every member of the node's cluster")
	fl.BoolVar(&f.json, "json", false, "print the status endpoint's JSON instead of tables")
	fl.BoolVarP(&f.watch, "watch", "w", false, "refresh in place until interrupted")
	fl.DurationVar(&f.interval, "interval", 2*time.Second, "refresh interval of --watch")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Second, "bound on one call to the node")
	return cmd
}

func (f *statusFlags) client() status.Client {
	return status.Client{URL: f.server, Token: f.token, HTTP: &http.Client{Timeout: f.timeout}}
}

// once asks the node and prints what it said; ready is false when the node or a member is not
// ready.
func (f *statusFlags) once(ctx context.Context, out io.Writer) (ready bool, err error) {
	now := time.Now()
	var v any
	if f.cluster {
		cl, err := f.client().Cluster(ctx)
		if err != nil {
			return false, f.explain(err)
		}
		v, ready = cl, cl.Ready()
		if !f.json {
			writeCluster(out, cl, now)
		}
	} else {
		st, err := f.client().Status(ctx)
		if err != nil {
			return false, f.explain(err)
		}
		v, ready = st, st.Node.Ready
		if !f.json {
			writeStatus(out, st, now)
		}
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return false, err
		}
	}
	return ready, nil
}

// runWatch redraws the status every interval until ctx ends; a node that cannot be asked is
// shown as such and asked again, a refused token ends the watch.
func (f *statusFlags) runWatch(ctx context.Context, out io.Writer) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		var frame bytes.Buffer
		frame.WriteString("\x1b[H\x1b[2J") // home, clear screen
		_, err := f.once(ctx, &frame)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if status.IsAuth(err) {
				return err
			}
			fmt.Fprintf(&frame, "%s: %v\n", time.Now().Format(time.TimeOnly), err)
		}
		fmt.Fprintf(&frame, "\nrefreshing every %s; Ctrl-C to stop\n", f.interval)
		if _, err := out.Write(frame.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// explain turns a refused token into one line that says what to do.
func (f *statusFlags) explain(err error) error {
	var he *status.HTTPError
	if !errors.As(err, &he) {
		return fmt.Errorf("asking %s: %w", f.server, err)
	}
	switch he.Code {
	case http.StatusUnauthorized:
		what := "no token was sent: pass --token or set $INFERD_TOKEN"
		if f.token != "" {
			what = "the token was refused"
		}
		return fmt.Errorf("%s answered 401 Unauthorized (%s): %w", f.server, what, errAuth{he})
	case http.StatusForbidden:
		return fmt.Errorf("%s answered 403 Forbidden (status needs a token of scope infer): %w", f.server, errAuth{he})
	}
	return err
}

// errAuth keeps a refused token recognizable under the explanation, and says only the
// node's message.
type errAuth struct{ e *status.HTTPError }

func (e errAuth) Error() string { return e.e.Message }
func (e errAuth) Unwrap() error { return e.e }

// writeStatus prints one node.
func writeStatus(out io.Writer, st status.Status, now time.Time) {
	writeNode(out, st)
	fmt.Fprintln(out)
	writeModels(out, []status.Member{{Name: st.Node.Name, Reachable: true, Status: &st}}, false, now)
	writeRolloutRows(out, st.Rollouts)
	writeEvents(out, st.Events, false, now)
}

// writeCluster prints every member: a line each, then the models of all, then their events.
func writeCluster(out io.Writer, cl status.Cluster, now time.Time) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tVERSION\tUP\tCPU\tMEMORY FREE\tGPUS\tREASON")
	for _, m := range cl.Nodes {
		name := m.Name
		if m.Local {
			name += " (answering)"
		}
		if !m.Reachable || m.Status == nil {
			fmt.Fprintf(tw, "%s\tunreachable\t-\t-\t-\t-\t-\t%s\n", name, dash(m.Error))
			continue
		}
		n, hw := m.Status.Node, m.Status.Hardware
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, n.State, dash(n.Version), uptime(n.UptimeSeconds),
			cpuBusy(hw.CPU), gib(hw.Memory.AvailableBytes), gpuSummary(hw.GPUs), dash(n.Reason))
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	writeModels(out, cl.Nodes, true, now)
	for _, m := range cl.Nodes {
		if m.Status != nil && m.Local {
			writeRolloutRows(out, m.Status.Rollouts)
		}
	}
	var evs []eventOf
	for _, m := range cl.Nodes {
		if m.Status != nil {
			for _, e := range m.Status.Events {
				evs = append(evs, eventOf{m.Name, e})
			}
		}
	}
	writeEventsOf(out, evs, true, now)
}

func writeNode(out io.Writer, st status.Status) {
	n, hw := st.Node, st.Hardware
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	state := n.State
	if n.Reason != "" {
		state += ": " + n.Reason
	}
	fmt.Fprintf(tw, "node:\t%s, inferd %s, up %s\n", n.Name, dash(n.Version), uptime(n.UptimeSeconds))
	fmt.Fprintf(tw, "state:\t%s\n", state)
	cpu := fmt.Sprintf("%s, %d threads, %d cores", dash(hw.CPU.Model), hw.CPU.Threads, hw.CPU.Cores)
	if len(hw.CPU.Features) > 0 {
		cpu += " (" + strings.Join(hw.CPU.Features, " ") + ")"
	}
	fmt.Fprintf(tw, "cpu:\t%s, %s busy\n", cpu, cpuBusy(hw.CPU))
	fmt.Fprintf(tw, "memory:\t%s available of %s\n", gib(hw.Memory.AvailableBytes), gib(hw.Memory.TotalBytes))
	if len(hw.GPUs) == 0 {
		fmt.Fprintf(tw, "gpus:\tnone (%s)\n", dash(hw.GPUNote))
	}
	for _, g := range hw.GPUs {
		line := fmt.Sprintf("%s, memory %s used of %s, %s busy", g.Name, gib(g.MemoryUsedBytes), gib(g.MemoryTotalBytes),
			strconv.FormatFloat(g.UtilizationPercent, 'f', -1, 64)+"%")
		if g.Problem != "" {
			line += ", LOST: " + g.Problem
		}
		fmt.Fprintf(tw, "gpu %d:\t%s\n", g.Index, line)
	}
	_ = tw.Flush()
}

// writeModels prints one row per model version of every member that answered, with a NODE
// column when withNode.
func writeModels(out io.Writer, nodes []status.Member, withNode bool, now time.Time) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	head := "MODEL\tVERSION\tSTATE\tPROVIDER\tINSTANCES\tQUEUE\tREQ/S\tP50\tP99\tERRORS\tBATCH\tWEIGHT\tROLLOUT\tLAST LOAD"
	if withNode {
		head = "NODE\t" + head
	}
	fmt.Fprintln(tw, head)
	rows := 0
	for _, m := range nodes {
		if m.Status == nil {
			continue
		}
		for _, r := range m.Status.Models {
			rows++
			if withNode {
				fmt.Fprintf(tw, "%s\t", m.Name)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Model, dash(r.Version), r.State,
				dash(r.Provider), r.Instances, r.QueueDepth, num(r.RequestsPerSecond), latency(r.P50Ms), latency(r.P99Ms),
				r.Errors, num(r.BatchSize), weight(r.WeightPercent), role(r.Rollout), lastLoad(r.LastLoad, now))
		}
	}
	_ = tw.Flush()
	if rows == 0 {
		fmt.Fprintln(out, "(no model versions)")
	}
}

func writeRolloutRows(out io.Writer, rs []status.Rollout) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLLOUT\tPHASE\tSTEP\tSTABLE\tCANARY\tCANARY WEIGHT\tREASON")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Model, dash(r.Phase), r.Step, dash(r.Stable), dash(r.Canary),
			percent(r.CanaryPercent), dash(r.Reason))
	}
	_ = tw.Flush()
}

type eventOf struct {
	node string
	e    events.Event
}

func writeEvents(out io.Writer, evs []events.Event, withNode bool, now time.Time) {
	all := make([]eventOf, len(evs))
	for i, e := range evs {
		all[i] = eventOf{e: e}
	}
	writeEventsOf(out, all, withNode, now)
}

// recentEvents is how many events the tables show.
const recentEvents = 10

func writeEventsOf(out io.Writer, evs []eventOf, withNode bool, now time.Time) {
	if len(evs) == 0 {
		return
	}
	slices.SortStableFunc(evs, func(a, b eventOf) int { return a.e.Time.Compare(b.e.Time) })
	evs = evs[max(len(evs)-recentEvents, 0):]
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	head := "WHEN\tLEVEL\tEVENT\tABOUT\tWHAT"
	if withNode {
		head = "WHEN\tON\tLEVEL\tEVENT\tABOUT\tWHAT"
	}
	fmt.Fprintln(tw, head)
	for _, x := range evs {
		e := x.e
		about := strings.TrimSpace(e.Model + " " + e.Version)
		if e.Node != "" {
			about = strings.TrimSpace(about + " node " + e.Node)
		}
		fmt.Fprintf(tw, "%s ago\t", age(now, e.Time))
		if withNode {
			fmt.Fprintf(tw, "%s\t", x.node)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Level, e.Kind, dash(about), oneLine(e.Message))
	}
	_ = tw.Flush()
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	const most = 120
	if len(s) > most {
		s = s[:most] + "…"
	}
	return s
}

func uptime(secs float64) string {
	return age(time.Unix(0, 0).Add(time.Duration(secs)*time.Second), time.Unix(0, 0))
}

func cpuBusy(c status.CPU) string {
	if c.UtilizationPercent == nil {
		return "-"
	}
	return strconv.FormatFloat(*c.UtilizationPercent, 'f', 1, 64) + "%"
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

func gpuSummary(gs []status.GPU) string {
	if len(gs) == 0 {
		return "-"
	}
	var parts []string
	for _, g := range gs {
		p := fmt.Sprintf("%d: %.0f%% mem, %.0f%% busy", g.Index, 100*float64(g.MemoryUsedBytes)/float64(max(g.MemoryTotalBytes, 1)), g.UtilizationPercent)
		if g.Problem != "" {
			p += " LOST"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func num(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

func latency(ms *float64) string {
	if ms == nil {
		return "-"
	}
	return strconv.FormatFloat(*ms, 'f', -1, 64) + "ms"
}

func weight(w *float64) string {
	if w == nil {
		return "-"
	}
	return percent(*w)
}

func role(r *status.VersionRollout) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%s, %s at step %d", r.Role, r.Phase, r.Step)
}

func lastLoad(l *status.Load, now time.Time) string {
	if l == nil {
		return "-"
	}
	s := l.Result + " " + age(now, l.At) + " ago"
	if l.Error != "" {
		s += ": " + oneLine(l.Error)
	}
	return s
}
