package alert

// The alerts the manager wants firing and what it has sent of each: the
// records its reconcile loop compares and persists.

import (
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
)

// Alert kinds: where a desired alert comes from.
const (
	kindRule      = "rule"
	kindCondition = "condition"
)

// desiredAlert is an alert that should be firing now.
type desiredAlert struct {
	Kind         string            `json:"kind"`
	Source       string            `json:"source"` // the rule or condition name
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func (d desiredAlert) clone() desiredAlert {
	d.Labels = maps.Clone(d.Labels)
	d.Annotations = maps.Clone(d.Annotations)
	return d
}

// sendRecord is a successful (or refused) send of one version of an alert.
type sendRecord struct {
	At   time.Time `json:"at"`
	Hash string    `json:"hash"`
}

// alertState is one alert known to the manager, firing or resolved. It is
// persisted as is under alert/state/<fingerprint>.
type alertState struct {
	// Format is the version of this record's encoding (persistedFormat),
	// so a later change can migrate old records instead of misreading them.
	Format int `json:"format"`
	desiredAlert
	// StartsAt is when this firing episode began; it never changes while
	// the alert fires, so Alertmanager sees one alert, not a new one per send.
	StartsAt time.Time `json:"startsAt"`
	// ResolvedAt is zero while the alert fires.
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Sent is the last successful send per Alertmanager (its Client.Name).
	Sent map[string]sendRecord `json:"sent,omitempty"`
}

func (st *alertState) firing() bool { return st.ResolvedAt.IsZero() }

func (st *alertState) clone() *alertState {
	c := *st
	c.desiredAlert = st.desiredAlert.clone()
	c.Sent = maps.Clone(st.Sent)
	return &c
}

// contentHash identifies what Alertmanager would store for this alert apart
// from a firing alert's moving endsAt: a change means "send now", not at the
// next resend.
func (st *alertState) contentHash() string {
	h := fnv.New64a()
	write := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	write(st.StartsAt.UTC().Format(time.RFC3339Nano))
	write(st.ResolvedAt.UTC().Format(time.RFC3339Nano))
	write(st.GeneratorURL)
	for _, k := range slices.Sorted(maps.Keys(st.Annotations)) {
		write(k)
		write(st.Annotations[k])
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

func (st *alertState) payload(now time.Time, resend time.Duration) Alert {
	a := Alert{
		Labels:       st.Labels,
		Annotations:  st.Annotations,
		StartsAt:     st.StartsAt,
		GeneratorURL: st.GeneratorURL,
	}
	if st.firing() {
		a.EndsAt = now.Add(4 * resend)
	} else {
		a.EndsAt = st.ResolvedAt
	}
	return a
}

// fingerprint is Alertmanager's fingerprint of a label set, so the ids in
// logs and Badger keys match what Alertmanager shows.
func fingerprint(labels map[string]string) string {
	return model.Fingerprint(model.LabelsToSignature(labels)).String()
}
