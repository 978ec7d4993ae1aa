// Package report is the evidence a replay leaves behind for incident
// closure: what window was checked with which rules, how much of each
// partition was actually read, what was found, whom it affects, and a verdict
// per rule. It writes the same content three ways (report.json for machines,
// report.md for tickets, a self-contained report.html with a timeline chart
// for people) and compares two reports (before and after a repair).
//
// The package knows nothing of Kafka or the engine: internal/replay fills a
// Report, this package renders and compares it.
package report

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/invmon/invmon/internal/quantity"
)

// FormatVersion is the version of report.json's layout. A reader refuses
// other versions rather than misreading them.
const FormatVersion = 1

// Verdicts of a rule and of the whole report.
const (
	// BudgetWithin and BudgetExhausted judge a window's error ratio against
	// a rule's objective, beside its zero-violation verdict.
	BudgetWithin    = "within budget"
	BudgetExhausted = "budget exhausted"
	// Pass means every partition the rule reads was fully covered and no
	// finding of the rule is still open.
	Pass = "pass"
	// Fail means at least one of the above does not hold; Reasons say which.
	Fail = "fail"
)

// Roles of a topic-partition in a replay.
const (
	// RoleInput is a stream some rule evaluates: read from the window's start
	// minus the lead-in.
	RoleInput = "input"
	// RoleReference is a stream only looked up (a reference table such as
	// accounts): read from the partition's log start, since a compacted
	// table's state at a time is everything written before it.
	RoleReference = "reference"
)

// File names written into a report directory.
const (
	JSONFile = "report.json"
	MDFile   = "report.md"
	HTMLFile = "report.html"
)

// Report is the evidence of one replay. Everything outside Run depends only
// on the data read and the rules, so two replays of the same window over the
// same records produce equal reports apart from Run.
type Report struct {
	Format int `json:"format"`
	// Run holds what is specific to this execution (ids, wall-clock times,
	// measured rate); compare reports without it.
	Run Run `json:"run"`
	// Window says what was judged and what was read to judge it.
	Window Window `json:"window"`
	// RuleSetVersion is the hash of every loaded rule's version.
	RuleSetVersion string `json:"rule_set_version"`
	// Verdict is Pass when every rule passes.
	Verdict string `json:"verdict"`
	Rules   []Rule `json:"rules"`
	// Coverage lists every partition of every topic the rules read.
	Coverage []Coverage `json:"coverage"`
	// Watermarks are each rule's event-time watermark per partition at the end.
	Watermarks []Watermark `json:"watermarks"`
	// Findings are the violations whose triggering event falls in the window,
	// ordered by event time.
	Findings []Finding `json:"findings"`
	// Customers is the affected cohort: every customer with a finding,
	// largest open impact first.
	Customers []Customer `json:"customers"`
	// DeadLetters counts records that could not be decoded or evaluated.
	DeadLetters []DeadLetter `json:"dead_letters"`
	// OutsideWindow counts violations the replay recorded for triggers
	// outside the window (in the lead-in or after the window's end). They
	// were judged with incomplete context and are not findings.
	OutsideWindow Outside `json:"outside_window"`
	// Notes state, in words, what was and was not judged.
	Notes []string `json:"notes"`
}

// Run is what differs between two executions of the same replay.
type Run struct {
	// ID names the replay; a resumed replay keeps its ID.
	ID string `json:"id"`
	// PlannedAt is when the replay was planned: its end offsets were the
	// partitions' ends then, unless Window.Until was given.
	PlannedAt time.Time `json:"planned_at"`
	// FinishedAt is when this report was written.
	FinishedAt time.Time `json:"finished_at"`
	// Resumes counts how often the replay was resumed after a stop.
	Resumes int `json:"resumes"`
	// RateLimit is the --rate in records per second; 0 is unlimited.
	RateLimit float64 `json:"rate_limit"`
	// RecordsThisRun and ReadSeconds measure the last execution's read phase
	// (from the first record it applied to the last).
	RecordsThisRun int64   `json:"records_this_run"`
	ReadSeconds    float64 `json:"read_seconds"`
	// RecordsPerSecond is RecordsThisRun / ReadSeconds.
	RecordsPerSecond float64 `json:"records_per_second"`
	// Alerted lists the rules whose open findings --alert sent to
	// Alertmanager (each pages when one of its severity tiers holds).
	Alerted []string `json:"alerted,omitempty"`
	// MonitorVersion is the build of invmon that wrote the report
	// (buildinfo.Short).
	MonitorVersion string `json:"monitor_version,omitempty"`
}

// Window is the judged window and how it was read.
type Window struct {
	// From and To bound the window, [From, To): a violation is a finding
	// when its triggering event's event time falls in it.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// LeadIn is how far before From the inputs were read, so that what
	// happened just before the window (a capture before an order's
	// fulfilment, the first of two duplicate entries) is known.
	LeadIn Duration `json:"lead_in"`
	// ReadFrom is From minus LeadIn: inputs were read from the first record
	// with a timestamp at or after it.
	ReadFrom time.Time `json:"read_from"`
	// Until, when set, is the timestamp the reading stopped at; otherwise the
	// partitions were read to their end offsets at Run.PlannedAt, so events
	// after the window (late entries, repairs) are seen.
	Until *time.Time `json:"until,omitempty"`
	// Horizon is the rules' largest window: how far past To a deadline of a
	// trigger inside the window can lie.
	Horizon Duration `json:"horizon"`
	// FinalClock is the event-time clock at the end: the newest event time
	// read, moved to at least To + Horizon + lateness, so every deadline up
	// to To + Horizon is judged once all inputs were read.
	FinalClock time.Time `json:"final_clock"`
	// Rules are the names of the rules replayed.
	Rules []string `json:"rules"`
}

// Rule is one rule's result.
type Rule struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Version is the hash of the rule's definition and the streams it reads.
	Version string `json:"version"`
	// Topics are the topics the rule reads, lookups included.
	Topics  []string `json:"topics"`
	Verdict string   `json:"verdict"`
	// Reasons say why the verdict is Fail; empty on Pass.
	Reasons []string `json:"reasons,omitempty"`
	// EntitiesChecked counts distinct entities with a triggering event in
	// the window; EntitiesViolating those with a finding.
	EntitiesChecked   int `json:"entities_checked"`
	EntitiesViolating int `json:"entities_violating"`
	// Objective is the rule's objective (0: none). The window is judged
	// against it too: ErrorRatio is the entities with a finding over the
	// entities checked, and Budget says whether that stays inside the error
	// budget 1 − Objective (BudgetWithin) or not (BudgetExhausted).
	Objective  float64 `json:"objective,omitempty"`
	ErrorRatio float64 `json:"error_ratio"`
	Budget     string  `json:"budget,omitempty"`
	// Open and Resolved count findings by state at the end.
	Open     int `json:"open"`
	Resolved int `json:"resolved"`
	// OpenImpact and TotalImpact sum the impact of open and of all findings,
	// rounded to the unit's precision.
	OpenImpact  float64 `json:"open_impact"`
	TotalImpact float64 `json:"total_impact"`
	ImpactUnit  string  `json:"impact_unit,omitempty"`
	// ImpactCounted is true for a rule without impact.value: its impact is
	// a count of findings, never summed with amounts.
	ImpactCounted bool `json:"impact_counted,omitempty"`
	// Customers counts distinct customers with an open finding.
	Customers int `json:"customers"`
	// Waiting counts expectations still waiting for a deadline beyond the
	// final watermark (absence, state and transition rules), over all
	// partitions, inside the window or not.
	Waiting int `json:"waiting"`
	// JudgedThrough is the lowest watermark of the rule over all partitions
	// at the end: every deadline before it was judged.
	JudgedThrough time.Time `json:"judged_through"`
	// Reach is how far past its trigger the rule's deadline lies (within,
	// for); 0 for kinds judged on arrival.
	Reach Duration `json:"reach"`
}

// Coverage is how much of one topic-partition was read.
type Coverage struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Role      string `json:"role"`
	// PlannedStart and PlannedEnd are the offsets to read, [start, end).
	PlannedStart int64 `json:"planned_start"`
	PlannedEnd   int64 `json:"planned_end"`
	// LogStart is the partition's first offset when the replay was planned.
	LogStart int64 `json:"log_start"`
	// RecordsRead counts records read and applied (or dead-lettered).
	RecordsRead int64 `json:"records_read"`
	// Position is the next offset the replay would have read.
	Position int64 `json:"position"`
	// Covered is true when every planned offset was read.
	Covered bool `json:"covered"`
	// Problem says why the partition is not covered.
	Problem string `json:"problem,omitempty"`
	// EndOffset is the partition's end offset when the report was written,
	// and Lag the records between Position and it: what the replay did not
	// read (records after Until, or produced since the replay was planned).
	EndOffset int64 `json:"end_offset"`
	Lag       int64 `json:"lag"`
}

// Watermark is a rule's event-time watermark on one partition at the end.
type Watermark struct {
	Rule      string    `json:"rule"`
	Partition int32     `json:"partition"`
	Watermark time.Time `json:"watermark"`
}

// Source locates a Kafka record.
type Source struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Finding is one violation inside the window.
type Finding struct {
	ID          string `json:"id"`
	Rule        string `json:"rule"`
	RuleVersion string `json:"rule_version"`
	// Key is the entity the rule joins on.
	Key   string `json:"key"`
	State string `json:"state"`
	// Impact and Customer are the rule's impact.value and impact.customer.
	Impact   float64 `json:"impact"`
	Customer string  `json:"customer,omitempty"`
	// TriggerEventID and EventTime identify the event that started it.
	TriggerEventID string    `json:"trigger_event_id"`
	EventTime      time.Time `json:"event_time"`
	Deadline       time.Time `json:"deadline"`
	// DetectedAt and ResolvedAt are on the replay's event-time clock.
	DetectedAt          time.Time  `json:"detected_at"`
	ResolvedAt          *time.Time `json:"resolved_at,omitempty"`
	ResolvedByEventTime *time.Time `json:"resolved_by_event_time,omitempty"`
	// Source is the triggering record.
	Source Source `json:"source"`
	Detail string `json:"detail,omitempty"`
}

// SortFindings puts findings in the report's order: by event time, then
// rule, entity key and id.
func SortFindings(fs []Finding) {
	slices.SortFunc(fs, func(a, b Finding) int {
		return findingOrder(a.EventTime, b.EventTime, a.Rule, b.Rule, a.Key, b.Key, a.ID, b.ID)
	})
}

// findingOrder compares two findings (or diff items) by event time, rule,
// entity key and a last tie-breaker.
func findingOrder(at, bt time.Time, ar, br, ak, bk, aid, bid string) int {
	return cmp.Or(at.Compare(bt), cmp.Compare(ar, br), cmp.Compare(ak, bk), cmp.Compare(aid, bid))
}

// Customer is one affected customer.
type Customer struct {
	Customer string `json:"customer"`
	Findings int    `json:"findings"`
	Open     int    `json:"open"`
	// Impacts sum the customer's impact per unit: amounts in different
	// units are never added, and rules without impact.value add none.
	Impacts []Amount `json:"impacts,omitempty"`
	Rules   []string `json:"rules"`
}

// Amount is a sum of impact in one unit, rounded to the unit's precision.
type Amount struct {
	Unit  string  `json:"unit"`
	Open  float64 `json:"open"`
	Total float64 `json:"total"`
}

// DeadLetter counts records of one topic-partition rejected for one reason.
type DeadLetter struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Reason    string `json:"reason"`
	Count     int64  `json:"count"`
	// Examples are the first few rejected records.
	Examples []DeadLetterExample `json:"examples,omitempty"`
}

// DeadLetterExample is one rejected record.
type DeadLetterExample struct {
	Offset int64  `json:"offset"`
	Error  string `json:"error"`
}

// Outside counts violations recorded for triggers outside the window.
type Outside struct {
	// BeforeWindow had their trigger in the lead-in.
	BeforeWindow int `json:"before_window"`
	// AfterWindow had their trigger at or after To.
	AfterWindow int `json:"after_window"`
}

// Duration is a time.Duration written as Go duration text ("24h0m0s") in
// JSON, so the file reads like the flags that produced it.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// String returns the Go duration text.
func (d Duration) String() string { return time.Duration(d).String() }

// Load reads a report.json, or the report.json inside a directory.
func Load(path string) (*Report, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, JSONFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	if r.Format != FormatVersion {
		return nil, fmt.Errorf("report %s has format %d; this monitor reads format %d", path, r.Format, FormatVersion)
	}
	return &r, nil
}

// Write writes report.json, report.md and report.html into dir, each
// atomically (a temporary file renamed into place), so a reader never sees
// half a report.
func Write(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report dir: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	var md, html bytes.Buffer
	if err := Markdown(&md, r); err != nil {
		return fmt.Errorf("render %s: %w", MDFile, err)
	}
	if err := HTML(&html, r); err != nil {
		return fmt.Errorf("render %s: %w", HTMLFile, err)
	}
	for name, content := range map[string][]byte{JSONFile: append(js, '\n'), MDFile: md.Bytes(), HTMLFile: html.Bytes()} {
		if err := writeAtomic(filepath.Join(dir, name), content); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, content []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// RuleNamed returns the rule result with that name, or nil.
// Unit returns the unit of the rule's impact, with its precision.
func (r Rule) Unit() quantity.Unit { return quantity.UnitOf(r.ImpactUnit, !r.ImpactCounted) }

// UnitOf returns the impact unit of the named rule; a rule the report does
// not list is read as a count, so its impact never passes for money.
func (r *Report) UnitOf(rule string) quantity.Unit {
	if rr := r.RuleNamed(rule); rr != nil {
		return rr.Unit()
	}
	return quantity.Count
}

// RuleNamed returns the report's entry for the named rule, or nil when the
// report has none.
func (r *Report) RuleNamed(name string) *Rule {
	for i := range r.Rules {
		if r.Rules[i].Name == name {
			return &r.Rules[i]
		}
	}
	return nil
}
