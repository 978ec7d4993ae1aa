package consumer

// Where a batch's wall-clock time goes. The poll loop and the committer each
// time their stages into one histogram, and mark them as runtime/trace
// regions, so an execution trace (go tool trace) shows the same stages on
// the goroutines that ran them.

import (
	"context"
	"runtime/trace"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The stages of a batch, the values of invmon_batch_stage_seconds' stage
// label.
const (
	// stagePoll is the poll loop waiting for records (PollRecords): a fetch
	// not yet buffered, or no traffic until the tick.
	stagePoll = "poll"
	// stageApply is the partitions' records applied to their engines, the
	// partitions in parallel.
	stageApply = "apply"
	// stageAdvance is the watermarks advanced and the deltas taken, the
	// partitions one after another, with the changelog records rendered.
	stageAdvance = "advance"
	// stageEnqueue is the poll loop waiting for room on the committer's
	// queue: the commit pipeline is behind.
	stageEnqueue = "enqueue"
	// stageProduce is the commit pipeline's producer stage producing a
	// batch's dead letters, changelog and violation changes and waiting for
	// their acks.
	stageProduce = "produce"
	// stageStateCommit is the state stage's synced Badger commit.
	stageStateCommit = "state_commit"
)

// BatchStages names the stages of a batch in their order, the poll loop's
// then the committer's.
var BatchStages = []string{stagePoll, stageApply, stageAdvance, stageEnqueue, stageProduce, stageStateCommit}

// stageMetrics times batch stages.
type stageMetrics struct {
	seconds *prometheus.HistogramVec
	records prometheus.Histogram
}

func newStageMetrics() *stageMetrics {
	return &stageMetrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "invmon_batch_stage_seconds",
			Help: "Wall-clock time of each stage of a batch: poll (waiting for records), apply, advance, enqueue (waiting for the committer), produce (dead letters, changelog and violation changes acknowledged), state_commit (the synced Badger commit).",
			// 100 µs to ~26 s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 19),
		}, []string{"stage"}),
		records: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "invmon_batch_records",
			Help:    "Records per polled batch that held any.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
	}
}

func (m *stageMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.seconds, m.records}
}

// start begins timing stage; the returned func ends it.
func (m *stageMetrics) start(stage string) (end func()) {
	region := trace.StartRegion(context.Background(), stage)
	began := time.Now()
	return func() {
		region.End()
		m.seconds.WithLabelValues(stage).Observe(time.Since(began).Seconds())
	}
}
