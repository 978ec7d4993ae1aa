package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/report"
	"github.com/invmon/invmon/internal/rules"
)

// planFormat versions plan.json.
const planFormat = 1

// Plan is what a replay decided before reading its first record: the window,
// the rules and their versions, and the offsets of every topic-partition. It
// is written once, before any state, and a resumed replay follows it exactly,
// so that a replay interrupted any number of times reads the same records as
// one that never was.
type Plan struct {
	Format    int       `json:"format"`
	RunID     string    `json:"run_id"`
	PlannedAt time.Time `json:"planned_at"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	// Until is the timestamp the reading stops at; nil reads to the end
	// offsets at PlannedAt.
	Until   *time.Time      `json:"until,omitempty"`
	LeadIn  report.Duration `json:"lead_in"`
	Horizon report.Duration `json:"horizon"`
	// Rules are the replayed rules with the versions they had when planned;
	// a resumed replay refuses rules that changed since.
	Rules          []PlanRule `json:"rules"`
	RuleSetVersion string     `json:"rule_set_version"`
	Partitions     []PlanTP   `json:"partitions"`
	// Resumes counts the resumed runs; Complete is set once every planned
	// record was read and the final watermark advance is durable.
	Resumes  int  `json:"resumes"`
	Complete bool `json:"complete"`
}

// PlanRule is a replayed rule and its version.
type PlanRule struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// PlanTP is one topic-partition's planned range.
type PlanTP struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Role      string `json:"role"`
	// Start and End bound the offsets to read, [Start, End).
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// LogStart is the partition's first offset when planned.
	LogStart int64 `json:"log_start"`
	// Problem, when set, is why the partition cannot be covered; it is not
	// read.
	Problem string `json:"problem,omitempty"`
}

// ReadFrom is the timestamp inputs are read from: From minus the lead-in.
func (p *Plan) ReadFrom() time.Time { return p.From.Add(-time.Duration(p.LeadIn)) }

func planPath(stateDir string) string { return filepath.Join(stateDir, "plan.json") }

// loadPlan reads a replay's plan; os.ErrNotExist when there is none.
func loadPlan(stateDir string) (*Plan, error) {
	b, err := os.ReadFile(planPath(stateDir))
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("replay plan %s: %w", planPath(stateDir), err)
	}
	if p.Format != planFormat {
		return nil, fmt.Errorf("replay plan %s has format %d; this monitor reads format %d", planPath(stateDir), p.Format, planFormat)
	}
	return &p, nil
}

// save writes the plan atomically: a torn plan would make the replay
// impossible to resume.
func (p *Plan) save(stateDir string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encode replay plan: %w", err)
	}
	tmp := planPath(stateDir) + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("write replay plan: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write replay plan: %w", err)
	}
	// The plan must be durable before state that depends on it.
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write replay plan: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write replay plan: %w", err)
	}
	if err := os.Rename(tmp, planPath(stateDir)); err != nil {
		return fmt.Errorf("write replay plan: %w", err)
	}
	return nil
}

// newRunID names a replay: its planning time and a random suffix, so ids
// sort by time and two replays planned in one second still differ.
func newRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "rp-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// planSpec is what planning needs besides the cluster.
type planSpec struct {
	rs       *rules.RuleSet
	from, to time.Time
	until    time.Time // zero: end offsets now
	leadIn   time.Duration
	now      time.Time
}

// makePlan finds the offsets of the window on every partition of the rules'
// topics: for inputs, the first offset whose record timestamp is at or after
// From minus the lead-in; for reference tables, the log start; the end is
// the first offset at or after Until, or the end offset now. A partition
// whose offsets cannot be listed, or whose lead-in may have started before
// records that are already deleted, is planned as not covered with the
// reason, never dropped.
func makePlan(ctx context.Context, adm *kadm.Client, s planSpec) (*Plan, error) {
	p := &Plan{
		Format: planFormat, RunID: newRunID(s.now), PlannedAt: s.now.UTC(), From: s.from.UTC(), To: s.to.UTC(),
		LeadIn: report.Duration(s.leadIn), Horizon: report.Duration(Horizon(s.rs)), RuleSetVersion: s.rs.Version,
	}
	if !s.until.IsZero() {
		u := s.until.UTC()
		p.Until = &u
	}
	for _, r := range s.rs.Rules {
		p.Rules = append(p.Rules, PlanRule{Name: r.Name, Version: r.Version})
	}
	inputs, refs := topicRoles(s.rs)
	all := append(append([]string(nil), inputs...), refs...)
	sort.Strings(all)
	details, err := adm.ListTopics(ctx, all...)
	if err != nil {
		return nil, fmt.Errorf("describe topics %v: %w", all, err)
	}
	if err := consumer.CheckCoPartitioned(s.rs, details); err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, all...)
	if err != nil && !isShardErr(err) {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, all...)
	if err != nil && !isShardErr(err) {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	var atFrom, atUntil kadm.ListedOffsets
	if len(inputs) > 0 {
		atFrom, err = adm.ListOffsetsAfterMilli(ctx, p.ReadFrom().UnixMilli(), inputs...)
		if err != nil && !isShardErr(err) {
			return nil, fmt.Errorf("list offsets at %s: %w", p.ReadFrom().Format(time.RFC3339), err)
		}
	}
	if p.Until != nil {
		atUntil, err = adm.ListOffsetsAfterMilli(ctx, p.Until.UnixMilli(), all...)
		if err != nil && !isShardErr(err) {
			return nil, fmt.Errorf("list offsets at %s: %w", p.Until.Format(time.RFC3339), err)
		}
	}
	isInput := map[string]bool{}
	for _, t := range inputs {
		isInput[t] = true
	}
	for _, topic := range all {
		td, ok := details[topic]
		role := report.RoleReference
		if isInput[topic] {
			role = report.RoleInput
		}
		if !ok || td.Err != nil {
			// A topic that is not there cannot be read: one row says so, so
			// the rules reading it fail instead of passing on no data.
			problem := "topic does not exist"
			if ok && td.Err != nil {
				problem = fmt.Sprintf("topic cannot be described: %v", td.Err)
			}
			p.Partitions = append(p.Partitions, PlanTP{Topic: topic, Partition: -1, Role: role, Start: -1, End: -1, LogStart: -1, Problem: problem})
			continue
		}
		for _, part := range td.Partitions.Numbers() {
			tp := PlanTP{Topic: topic, Partition: part, Role: role}
			tp.LogStart, tp.Problem = offsetOf(starts, topic, part, "log start", "")
			var end int64
			end, tp.Problem = offsetOf(ends, topic, part, "end", tp.Problem)
			tp.End = end
			if p.Until != nil {
				tp.End, tp.Problem = offsetOf(atUntil, topic, part, "offset at --until", tp.Problem)
			}
			if role == report.RoleInput {
				tp.Start, tp.Problem = offsetOf(atFrom, topic, part, "offset at the lead-in's start", tp.Problem)
				// The broker answers a time lookup with the first record it
				// still has at or after the time. When that is the log start
				// and records before it were deleted, the range may have
				// begun among them: the partition cannot be shown covered.
				if tp.Problem == "" && tp.LogStart > 0 && tp.Start == tp.LogStart {
					tp.Problem = fmt.Sprintf("records before offset %d were deleted (retention or DeleteRecords); the range from %s may have begun among them",
						tp.LogStart, p.ReadFrom().Format(time.RFC3339))
				}
			} else {
				tp.Start = tp.LogStart
			}
			if tp.Problem == "" && tp.Start > tp.End {
				tp.End = tp.Start // nothing to read
			}
			p.Partitions = append(p.Partitions, tp)
		}
	}
	return p, nil
}

// offsetOf returns the listed offset of topic/part, or a problem (keeping an
// earlier one) when it could not be listed.
func offsetOf(l kadm.ListedOffsets, topic string, part int32, what, problem string) (int64, string) {
	o, ok := l.Lookup(topic, part)
	switch {
	case !ok:
		if problem == "" {
			problem = what + " unavailable: the partition was not in the broker's answer"
		}
		return -1, problem
	case o.Err != nil:
		if problem == "" {
			problem = fmt.Sprintf("%s unavailable: %v", what, o.Err)
		}
		return -1, problem
	}
	return o.Offset, problem
}

// isShardErr reports whether err only says that some partitions failed;
// those are reported per partition, the rest is usable.
func isShardErr(err error) bool {
	var se *kadm.ShardErrors
	return errors.As(err, &se)
}

// checkRules refuses to resume with rules that differ from the plan's: the
// state holds the old rules' expectations and violation ids.
func (p *Plan) checkRules(rs *rules.RuleSet) error {
	if len(rs.Rules) != len(p.Rules) {
		return fmt.Errorf("the replay was planned with %d rules and the selection now has %d; start a new replay", len(p.Rules), len(rs.Rules))
	}
	for i, r := range rs.Rules {
		if pr := p.Rules[i]; pr.Name != r.Name || pr.Version != r.Version {
			return fmt.Errorf("rule %s changed since the replay was planned (version %s, now %s %s); start a new replay", pr.Name, pr.Version, r.Name, r.Version)
		}
	}
	return nil
}
