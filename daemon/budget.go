package daemon

import (
	"cmp"
	"fmt"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// budgetHealth is /health's "scheduler" component: the node-wide core budget and what each
// ready model version takes from it.
type budgetHealth struct {
	scheduler.CoreBudget
	Models []versionBudget `json:"models"`
}

// versionBudget is one ready version's configuration and share of the budget.
type versionBudget struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Source is "auto" (calibrated) or "model.toml" (as written; Reason says why).
	Source string `json:"source"`
	// Instances is how many take batches now; Calibrated is what calibration chose (the most
	// the count goes back up to as the load grows), 0 when not calibrated.
	Instances      int `json:"instances"`
	Calibrated     int `json:"calibrated_instances,omitempty"`
	IntraOpThreads int `json:"intra_op_threads"`
	// Cores is what the version keeps busy with every instance running: instances × threads
	// (0 on a GPU).
	Cores       int    `json:"cores"`
	BatchTarget int    `json:"batch_target,omitempty"`
	Reason      string `json:"reason"`
	// Unusable lists the calibrated configurations that failed, with why.
	Unusable []string `json:"unusable,omitempty"`
}

// budgetComponent adds "scheduler" to /health.
func (d *Daemon) budgetComponent(out map[string]api.Component) {
	h := budgetHealth{CoreBudget: d.sched.Cores(), Models: []versionBudget{}}
	for _, e := range d.repo.Index() {
		if e.State != models.StateReady {
			continue
		}
		v, err := d.repo.Resolve(e.Name, e.Version)
		if err != nil {
			continue // replaced since the index was read
		}
		snap := d.sched.Stats(v)
		t := v.Tuning
		b := versionBudget{Name: e.Name, Version: e.Version, Source: t.Source, Instances: cmp.Or(snap.Instances, len(v.Sessions)),
			IntraOpThreads: t.IntraOpThreads, BatchTarget: snap.BatchTarget, Reason: t.Reason}
		if t.Source == "auto" {
			b.Calibrated = t.Instances
		}
		if p := v.Policy(); p.Threads > 0 {
			b.Cores = b.Instances * p.Threads
		}
		for _, pt := range t.Profile {
			if pt.Error != "" {
				b.Unusable = append(b.Unusable, fmt.Sprintf("%d×%d: %s", pt.Instances, pt.IntraOpThreads, pt.Error))
			}
		}
		h.Models = append(h.Models, b)
	}
	out["scheduler"] = api.Component{State: "ok", Detail: h}
}
