package replay

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// LogSink is the writer a logger writes to. While progress bars are on
// screen it writes through them (mpb prints such lines above the bars), so
// log lines and bars do not tear each other; otherwise straight through.
type LogSink struct {
	mu sync.Mutex
	w  io.Writer
	to io.Writer
}

// NewLogSink returns a sink writing to w.
func NewLogSink(w io.Writer) *LogSink { return &LogSink{w: w} }

// Write implements io.Writer.
func (s *LogSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.to != nil {
		return s.to.Write(b)
	}
	return s.w.Write(b)
}

// Sync implements zapcore.WriteSyncer.
func (s *LogSink) Sync() error { return nil }

func (s *LogSink) redirect(to io.Writer) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.to = to
	s.mu.Unlock()
}

// progressView shows how far the reading is.
type progressView interface {
	// update is called often; it draws at its own pace.
	update(now time.Time)
	// close ends the display; complete says whether every partition was read.
	close(complete bool)
}

func newProgress(o Options, runID string, tps []*tpState) progressView {
	switch {
	case o.Progress == nil:
		return noProgress{}
	case o.Terminal:
		return newBars(o, tps)
	default:
		return &lines{w: o.Progress, every: o.ProgressInterval, now: o.Now, runID: runID, tps: tps, last: map[*tpState]int64{}}
	}
}

type noProgress struct{}

func (noProgress) update(time.Time) {}
func (noProgress) close(bool)       {}

// planned is how many offsets a partition spans, and done how many of them
// are behind it; offsets rather than records, since compaction leaves gaps.
func planned(s *tpState) int64 { return max(0, s.plan.End-s.plan.Start) }
func done(s *tpState) int64    { return min(planned(s), max(0, s.next-s.plan.Start)) }

// bars is one mpb bar per topic-partition with counts, rate and ETA.
type bars struct {
	p      *mpb.Progress
	sink   *LogSink
	bars   map[*tpState]*mpb.Bar
	last   time.Time
	closed bool
}

func newBars(o Options, tps []*tpState) *bars {
	b := &bars{p: mpb.New(mpb.WithOutput(o.Progress), mpb.WithWidth(32), mpb.WithRefreshRate(200*time.Millisecond)),
		sink: o.LogSink, bars: map[*tpState]*mpb.Bar{}, last: o.Now()}
	for _, s := range tps {
		if s.plan.Partition < 0 || planned(s) == 0 || s.failed != "" {
			continue
		}
		bar := b.p.AddBar(planned(s),
			mpb.PrependDecorators(
				decor.Name(s.label, decor.WCSyncSpaceR),
				decor.CountersNoUnit("%d / %d", decor.WCSyncSpace),
			),
			mpb.AppendDecorators(
				decor.Percentage(decor.WCSyncSpace),
				decor.EwmaSpeed(nil, "%.0f rec/s", 30, decor.WCSyncSpace),
				decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30, decor.WCSyncSpace), "done"),
			),
		)
		bar.SetCurrent(done(s))
		b.bars[s] = bar
	}
	b.sink.redirect(b.p)
	return b
}

func (b *bars) update(now time.Time) {
	dur := now.Sub(b.last)
	if dur < 100*time.Millisecond {
		return
	}
	b.last = now
	for s, bar := range b.bars {
		switch {
		case s.failed != "":
			if !bar.Aborted() {
				bar.Abort(false)
			}
		case !bar.Completed():
			bar.EwmaSetCurrent(done(s), dur)
		}
	}
}

func (b *bars) close(complete bool) {
	if b.closed {
		return
	}
	b.closed = true
	for s, bar := range b.bars {
		if bar.AbortedOrCompleted() {
			continue
		}
		if complete && s.failed == "" {
			bar.SetCurrent(planned(s))
		} else {
			bar.Abort(false)
		}
	}
	b.p.Wait()
	b.sink.redirect(nil)
}

// lines prints, every interval, one line for the replay and one per
// topic-partition still being read: for logs and CI, where bars would be
// noise.
type lines struct {
	w      io.Writer
	every  time.Duration
	now    func() time.Time
	runID  string
	tps    []*tpState
	at     time.Time
	last   map[*tpState]int64
	closed bool
}

func (l *lines) update(now time.Time) {
	if l.at.IsZero() {
		l.at = now
		for _, s := range l.tps {
			l.last[s] = done(s)
		}
		return
	}
	if now.Sub(l.at) < l.every {
		return
	}
	l.print(now)
}

func (l *lines) print(now time.Time) {
	secs := now.Sub(l.at).Seconds()
	l.at = now
	var total, read, delta int64
	var b strings.Builder
	for _, s := range l.tps {
		if s.plan.Partition < 0 {
			continue
		}
		d := done(s)
		total += planned(s)
		read += d
		step := d - l.last[s]
		delta += step
		l.last[s] = d
		switch {
		case s.failed != "":
			fmt.Fprintf(&b, "  %s: NOT COVERED at %d/%d: %s\n", s.label, d, planned(s), s.failed)
		case d < planned(s):
			fmt.Fprintf(&b, "  %s: %d/%d (%.0f%%) %.0f rec/s ETA %s\n", s.label, d, planned(s), pct(d, planned(s)), float64(step)/secs, eta(planned(s)-d, float64(step)/secs))
		}
	}
	fmt.Fprintf(l.w, "replay %s: %d/%d (%.0f%%) %.0f rec/s ETA %s\n%s", l.runID, read, total, pct(read, total), float64(delta)/secs,
		eta(total-read, float64(delta)/secs), b.String())
}

func (l *lines) close(complete bool) {
	if l.closed {
		return
	}
	l.closed = true
	if !l.at.IsZero() {
		l.print(l.now())
	}
	state := "read"
	if !complete {
		state = "stopped"
	}
	fmt.Fprintf(l.w, "replay %s: %s\n", l.runID, state)
}

func pct(n, of int64) float64 {
	if of == 0 {
		return 100
	}
	return 100 * float64(n) / float64(of)
}

func eta(left int64, rate float64) string {
	if left <= 0 {
		return "0s"
	}
	if rate <= 0 {
		return "?"
	}
	return time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second).String()
}
