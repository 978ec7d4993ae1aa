package e2e

// Acceptance tests of issue 6 on the real broker: a consumer group whose
// members are SIGKILLed, restarted, added and removed while a friday-rollback
// incident is produced; a broker restart in the middle of a run; and the
// processing pause of a rebalance.
//
// A note on time. The simulator stamps its events hours in the past and the
// monitor lets an input's watermark follow the clock once the input has read
// up to its high-water mark and been silent for idle_after (10s in the example
// rules). A replay that pauses for longer than that while more of the
// scenario is still to come would have the clock overtake events that are
// still on their way: pending absences would be judged early and the late
// events would resolve them, which is the documented semantics, not a bug.
// The producers below therefore produce in chunks a second or two apart, and
// planScenario checks that no input partition goes without a record for more
// than a few chunks until its last one. The broker restart is such a pause by
// construction, so that test uses a longer idle_after.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/server"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/violation"
)

// exampleRules are the five example rules, which sim's truth covers.
var exampleRules = []string{
	sim.RuleCapturedPaymentHasLedgerEntry,
	sim.RuleNoDuplicateLedgerEffect,
	sim.RulePaymentTransitionsAllowed,
	sim.RuleFulfilledOrderHasCapture,
	sim.RuleActiveSubscriptionEntitled,
}

// TestChaosGroupMatchesGroundTruth is issue 6's acceptance line 1: three
// `monitor run` processes in one group on a friday-rollback workload, a random
// one SIGKILLed and restarted every two to three seconds, a fourth member
// added and removed meanwhile; at the end the violations equal the truth.
func alertmanagerConfig() string {
	if chaosAlertmanager == "" {
		return ""
	}
	return fmt.Sprintf("alertmanager: {urls: [%q], resend_interval: 2s}\n", chaosAlertmanager)
}

// checkOneFiringPerIncident requires every alert to have been notified
// firing once per incident: never twice without a resolution in between.
func checkOneFiringPerIncident(t *testing.T, hook *kafkatest.WebhookReceiver) {
	t.Helper()
	firing := map[string]bool{}
	pages := 0
	for _, a := range hook.Alerts() {
		id := a.Fingerprint + " " + a.Labels["alertname"] + "/" + a.Labels["severity"]
		switch a.Status {
		case "firing":
			if firing[id] {
				t.Errorf("alert %s notified firing twice in one incident", id)
			}
			firing[id] = true
			pages++
		case "resolved":
			firing[id] = false
		}
	}
	if pages == 0 {
		t.Error("no alert reached Alertmanager")
	}
	t.Logf("chaos: %d firing notifications at Alertmanager, each once per incident", pages)
}

func TestChaosGroupMatchesGroundTruth(t *testing.T) {
	const (
		partitions = 6
		chunks     = 24
		interval   = 1250 * time.Millisecond
		minKills   = 10
	)
	began := time.Now()
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("chaos%d-", time.Now().UnixNano())
	group := prefix + "group"
	topics := prefixed(prefix, sim.Topics)
	kafkatest.CreateTopics(t, brokers, partitions, topics...)
	dir := t.TempDir()
	ruleGlob := writeExampleRules(t, dir, prefix, nil)
	plan := planScenario(t, "friday-rollback", 61, 12000, prefix, partitions, chunks)
	bin := buildMonitor(t)
	tl := newTimeline(t)
	defer tl.dump()
	hook := kafkatest.NewWebhookReceiver(t)
	chaosAlertmanager = kafkatest.StartAlertmanager(t, hook.URL()).URL()
	defer func() { chaosAlertmanager = "" }()

	var static []*groupMember
	for i := range 3 {
		static = append(static, newGroupMember(t, bin, dir, fmt.Sprintf("m%d", i), brokers, group, ruleGlob, fmt.Sprintf("chaos-m%d", i)))
	}
	// The fourth member is dynamic, like an autoscaled replica: its SIGTERM
	// leaves the group at once.
	extra := newGroupMember(t, bin, dir, "m3-dynamic", brokers, group, ruleGlob, "")
	all := append(slices.Clone(static), extra)
	defer func() {
		if t.Failed() {
			for _, m := range all {
				t.Logf("----- %s log (tail) -----\n%s", m.name, m.logTail(3000))
			}
			keepLogs(t, all...)
		}
	}()
	for _, m := range static {
		m.launch()
	}
	for _, m := range static {
		if _, err := m.waitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	tl.add("three members ready")

	cl := newProducer(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	prod := plan.produceAsync(ctx, cl, interval, nil)
	tl.add("production started: %d events (%d accounts first, then %d chunks every %s)", len(plan.ds.Events), len(plan.head), chunks, interval)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 6))
	kills, notReadyKills := 0, 0
	var restartReady []time.Duration
	launchedAt := map[*groupMember]time.Time{}
	nextKill := time.Now().Add(2 * time.Second)
	extraStarted, extraStopped := false, false
	var extraLaunched time.Time
	prodDone := false
	var nextVictim *groupMember
	for {
		select {
		case <-prod.done:
			if !prodDone {
				prodDone = true
				if prod.err != nil {
					t.Fatalf("produce: %v", prod.err)
				}
				tl.add("production finished")
			}
		default:
		}
		for _, m := range all {
			if gone, err := m.exitedUnexpectedly(); gone {
				t.Fatalf("%s exited on its own (%v); log:\n%s", m.name, err, m.logTail(6000))
			}
		}
		// Restart-to-ready times of the members restarted after a kill.
		for m, at := range launchedAt {
			if m.ready() {
				restartReady = append(restartReady, time.Since(at))
				delete(launchedAt, m)
			}
		}
		if extraStarted && !extraStopped && !extraLaunched.IsZero() && extra.ready() {
			tl.add("%s ready %s after it started", extra.name, time.Since(extraLaunched).Round(time.Millisecond))
			extraLaunched = time.Time{}
		}
		if prodDone && kills >= minKills && extraStopped && nextVictim == nil {
			break
		}
		if time.Now().Before(nextKill) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		victim := nextVictim
		if victim == nil {
			victim = static[rng.IntN(len(static))]
		}
		nextVictim = nil
		wasReady := victim.ready()
		if _, pending := launchedAt[victim]; pending || !wasReady {
			notReadyKills++
		}
		delete(launchedAt, victim)
		victim.kill()
		kills++
		pause := time.Duration(rng.IntN(1000)) * time.Millisecond
		tl.add("kill #%d: SIGKILL %s (ready: %v), restart in %s", kills, victim.name, wasReady, pause)
		time.Sleep(pause)
		victim.launch()
		launchedAt[victim] = time.Now()
		switch {
		case kills == 3 && !extraStarted:
			extra.launch()
			extraStarted, extraLaunched = true, time.Now()
			tl.add("added %s", extra.name)
		case kills >= 7 && extraStarted && !extraStopped:
			// Stop it only once it has owned partitions, so its leave moves state.
			if _, err := extra.waitReady(60 * time.Second); err != nil {
				t.Fatal(err)
			}
			took := extra.terminate(30 * time.Second)
			extraStopped = true
			tl.add("stopped %s with SIGTERM (exited in %s)", extra.name, took.Round(time.Millisecond))
		}
		nextKill = time.Now().Add(2*time.Second + time.Duration(rng.IntN(1000))*time.Millisecond)
		if kills%4 == 1 {
			// Every fourth kill hits the member just restarted, while it
			// joins or restores its partitions.
			nextVictim = victim
			nextKill = time.Now().Add(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		}
	}
	chaosEnd := time.Now()
	for _, m := range static {
		if _, err := m.waitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	tl.add("chaos over: %d kills (%d of a member not yet ready); every member ready", kills, notReadyKills)

	// Scale down to one member. A static member does not leave the group when
	// it stops (its restart would get its partitions back without a
	// rebalance), so the operator removes the stopped ones, as
	// kafka-consumer-groups --delete-members would.
	survivor := static[0]
	for _, m := range static[1:] {
		took := m.terminate(30 * time.Second)
		tl.add("stopped %s with SIGTERM (exited in %s)", m.name, took.Round(time.Millisecond))
	}
	adm := kadm.NewClient(cl)
	lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
	resp, err := adm.LeaveGroup(lctx, kadm.LeaveGroup(group).InstanceIDs("chaos-m1", "chaos-m2").Reason("chaos test scale-down"))
	lcancel()
	if err != nil {
		t.Fatalf("remove stopped static members: %v", err)
	}
	if err := resp.Error(); err != nil {
		t.Fatalf("remove stopped static members: %v", err)
	}
	tl.add("removed chaos-m1 and chaos-m2 from the group")

	found := waitSettled(t, tl, survivor, adm, group, "chaos-m0", topics, partitions, prod.finished(), 10*time.Second, 120*time.Second)
	tl.add("settled on %s: %d violations", survivor.name, len(found))
	checkDLQEmpty(t, adm, group)
	plan.warnIfProductionStalled(t, prod, 8*time.Second)
	compareWithTruth(t, plan, found)
	checkOneFiringPerIncident(t, hook)

	sort.Slice(restartReady, func(i, j int) bool { return restartReady[i] < restartReady[j] })
	if len(restartReady) > 0 {
		t.Logf("chaos: %d SIGKILLs over %s (%d hit a member still starting or restoring); restart to ready: min %s, median %s, max %s (%d samples)",
			kills, chaosEnd.Sub(began).Round(time.Second), notReadyKills,
			restartReady[0].Round(time.Millisecond), restartReady[len(restartReady)/2].Round(time.Millisecond),
			restartReady[len(restartReady)-1].Round(time.Millisecond), len(restartReady))
	}
	t.Logf("chaos: production %s, whole test %s", prod.finished().Sub(prod.started).Round(time.Millisecond), time.Since(began).Round(time.Second))
}

// TestBrokerRestartMidRun is issue 6's acceptance line 2: the broker stops in
// the middle of a run, while records are produced and consumed, and starts
// again; the violations still equal the truth.
func TestBrokerRestartMidRun(t *testing.T) {
	const (
		partitions = 4
		chunks     = 10
		interval   = time.Second
		stopAfter  = 4 // chunks acknowledged before the broker stops
		downFor    = 3 * time.Second
	)
	began := time.Now()
	broker := kafkatest.StartKafka(t)
	brokers := broker.Addr()
	prefix := fmt.Sprintf("brestart%d-", time.Now().UnixNano())
	group := prefix + "group"
	topics := prefixed(prefix, sim.Topics)
	kafkatest.CreateTopics(t, brokers, partitions, topics...)
	dir := t.TempDir()
	// The outage is a pause of about ten seconds in the replay: a longer
	// idle_after keeps the clock from overtaking the events still to come
	// (see the note at the top of this file).
	const idle = 30 * time.Second
	ruleGlob := writeExampleRules(t, dir, prefix, map[string]string{"idle_after: 10s": fmt.Sprintf("idle_after: %s", idle)})
	plan := planScenario(t, "friday-rollback", 71, 8000, prefix, partitions, chunks)
	tl := newTimeline(t)
	defer tl.dump()

	m := newGroupMember(t, buildMonitor(t), dir, "m0", brokers, group, ruleGlob, "brestart-m0")
	defer func() {
		if t.Failed() {
			t.Logf("----- %s log (tail) -----\n%s", m.name, m.logTail(8000))
			keepLogs(t, m)
		}
	}()
	m.launch()
	if _, err := m.waitReady(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	tl.add("member ready")

	cl := newProducer(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	prod := plan.produceAsync(ctx, cl, interval, func(i int) {
		if i == stopAfter-1 {
			close(stop)
		}
	})
	tl.add("production started: %d events in %d chunks every %s", len(plan.ds.Events), chunks, interval)
	select {
	case <-stop:
	case <-prod.done:
		t.Fatalf("production ended before the broker stop: %v", prod.err)
	}
	consumed := m.metricSum(t, "invmon_events_consumed_total")
	stopBegan := time.Now()
	broker.Stop()
	stopped := time.Now()
	tl.add("broker stopped (took %s); the member had consumed %.0f events", stopped.Sub(stopBegan).Round(time.Millisecond), consumed)
	time.Sleep(downFor)
	if gone, err := m.exitedUnexpectedly(); gone {
		t.Fatalf("the monitor exited while the broker was down (%v)", err)
	}
	broker.Start()
	tl.add("broker started again (down %s, unavailable %s in all)", time.Since(stopped).Round(time.Millisecond), time.Since(stopBegan).Round(time.Millisecond))
	<-prod.done
	if prod.err != nil {
		t.Fatalf("produce: %v", prod.err)
	}
	tl.add("production finished")
	if gone, err := m.exitedUnexpectedly(); gone {
		t.Fatalf("the monitor exited (%v)", err)
	}
	adm := kadm.NewClient(cl)
	found := waitSettled(t, tl, m, adm, group, "brestart-m0", topics, partitions, prod.finished(), idle, 150*time.Second)
	tl.add("settled: %d violations", len(found))
	checkDLQEmpty(t, adm, group)
	plan.warnIfProductionStalled(t, prod, idle-5*time.Second)
	compareWithTruth(t, plan, found)
	t.Logf("broker restart: the longest pause between acknowledged chunks was %s; whole test %s", prod.maxGap().Round(time.Millisecond), time.Since(began).Round(time.Second))
}

// TestRebalancePause measures how long a member that is fed continuously
// stops processing when a second member joins its group (the README's
// figure), and checks what makes that a pause and not an outage: the
// running member resumes after a handoff, not a timeout; the members end
// up sharing the partitions; and the group applies everything fed to it.
func TestRebalancePause(t *testing.T) {
	const (
		partitions = 6
		sampleEach = 50 * time.Millisecond
		baseline   = 4 * time.Second
		after      = 8 * time.Second // observed after the new member is ready
		// maxHandoffPause bounds the running member's stall (about 60 ms here).
		maxHandoffPause = 10 * time.Second
	)
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("rebalance%d-", time.Now().UnixNano())
	group := prefix + "group"
	kafkatest.CreateTopics(t, brokers, partitions, prefix+"payments", prefix+"ledger")
	dir := t.TempDir()
	ruleGlob := writeRules(t, dir, prefix)
	bin := buildMonitor(t)
	a := newGroupMember(t, bin, dir, "a", brokers, group, ruleGlob, "rebalance-a")
	b := newGroupMember(t, bin, dir, "b", brokers, group, ruleGlob, "rebalance-b")
	defer func() {
		if t.Failed() {
			for _, m := range []*groupMember{a, b} {
				t.Logf("----- %s log (tail) -----\n%s", m.name, m.logTail(5000))
			}
			keepLogs(t, a, b)
		}
	}()
	a.launch()
	if _, err := a.waitReady(90 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A steady feed with current timestamps: every 10ms two captured payments
	// and their ledger entries, on 200 accounts spread over the partitions.
	cl := newProducer(t, brokers)
	feedCtx, stopFeed := context.WithCancel(context.Background())
	var feedErr error
	var feedMu sync.Mutex
	var feedWG sync.WaitGroup
	feedWG.Add(1)
	go func() {
		defer feedWG.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-feedCtx.Done():
				return
			case <-tick.C:
			}
			for j := range 2 {
				now := time.Now().UTC()
				id := fmt.Sprintf("rb-%d-%d", n, j)
				acct := fmt.Sprintf("acct-%03d", (n*2+j)%200)
				pay := fmt.Sprintf(`{"event_id":"%s-captured","idempotency_key":"idem-%s","payment_id":"%s","account_id":"%s","status":"captured","amount_cents":1000,"currency":"USD","occurred_at":"%s"}`,
					id, id, id, acct, now.Format(time.RFC3339Nano))
				led := fmt.Sprintf(`{"entry_id":"le-%s","idempotency_key":"idem-%s","payment_id":"%s","account_id":"%s","amount_cents":1000,"direction":"credit","occurred_at":"%s"}`,
					id, id, id, acct, now.Add(50*time.Millisecond).Format(time.RFC3339Nano))
				for topic, v := range map[string]string{"payments": pay, "ledger": led} {
					cl.Produce(feedCtx, &kgo.Record{Topic: prefix + topic, Key: []byte(acct), Value: []byte(v), Timestamp: now},
						func(_ *kgo.Record, err error) {
							if err != nil && !errors.Is(err, context.Canceled) {
								feedMu.Lock()
								feedErr = errors.Join(feedErr, err)
								feedMu.Unlock()
							}
						})
				}
			}
		}
	}()
	defer func() { stopFeed(); feedWG.Wait() }()

	type sample struct {
		at   time.Time
		a, b float64
	}
	var samples []sample
	lastB := 0.0
	take := func() {
		s := sample{at: time.Now(), a: a.metricSum(t, "invmon_events_consumed_total"), b: lastB}
		if v, err := b.tryMetricSum("invmon_events_consumed_total"); err == nil {
			s.b, lastB = v, v
		}
		samples = append(samples, s)
	}
	sampleUntil := func(cond func() bool) {
		for !cond() {
			take()
			if gone, err := a.exitedUnexpectedly(); gone {
				t.Fatalf("member a exited (%v)", err)
			}
			if gone, err := b.exitedUnexpectedly(); gone {
				t.Fatalf("member b exited (%v)", err)
			}
			time.Sleep(sampleEach)
		}
	}
	// Let the feed reach a steady state, then take the baseline.
	warm := time.Now().Add(2 * time.Second)
	sampleUntil(func() bool { return time.Now().After(warm) })
	samples = samples[:0]
	baseEnd := time.Now().Add(baseline)
	sampleUntil(func() bool { return time.Now().After(baseEnd) })
	joined := time.Now()
	b.launch()
	var bReady time.Time
	deadline := joined.Add(90 * time.Second)
	sampleUntil(func() bool {
		if bReady.IsZero() && b.ready() {
			bReady = time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("member b not ready within 90s")
		}
		return !bReady.IsZero() && time.Since(bReady) > after
	})
	stopFeed()
	feedWG.Wait()
	feedMu.Lock()
	ferr := feedErr
	feedMu.Unlock()
	if ferr != nil {
		t.Fatalf("feed: %v", ferr)
	}
	// The members share the partitions now, and between them they apply
	// everything the feed produced: the handoff neither lost nor stuck any.
	if oa, ob := a.metricSum(t, "invmon_owned_partitions"), b.metricSum(t, "invmon_owned_partitions"); oa < 1 || ob < 1 || oa+ob != partitions {
		t.Fatalf("after the rebalance member a owns %.0f partitions and b %.0f; want both some, %d in all", oa, ob, partitions)
	}
	waitFor(t, 60*time.Second, func() bool {
		return committedThrough(t, brokers, group, prefix+"payments", prefix+"ledger")
	})

	// stall returns the longest run of samples in [from, to] over which v did
	// not move: from the last sample at which it moved to the next one.
	stall := func(from, to time.Time, v func(sample) float64) (longest time.Duration, at time.Time) {
		var prev *sample
		var since time.Time
		for i := range samples {
			s := &samples[i]
			if s.at.Before(from) || s.at.After(to) {
				continue
			}
			if prev == nil || v(*s) != v(*prev) {
				if prev != nil && s.at.Sub(since) > longest {
					longest, at = s.at.Sub(since), since
				}
				since = s.at
			}
			prev = s
		}
		if prev != nil && prev.at.Sub(since) > longest {
			longest, at = prev.at.Sub(since), since
		}
		return longest, at
	}
	end := samples[len(samples)-1].at
	base, _ := stall(joined.Add(-baseline), joined, func(s sample) float64 { return s.a })
	longest, longestAt := stall(joined, end, func(s sample) float64 { return s.a })

	// The rebalance as the members logged it.
	msgs := []string{"partitions revoked", "partitions assigned", "partitions lost", "local state is current", "restored partition from the changelog"}
	evA, evB := a.logEvents(joined, msgs...), b.logEvents(joined, msgs...)
	for _, x := range []struct {
		name string
		ev   []logEvent
	}{{a.name, evA}, {b.name, evB}} {
		lines := make([]string, len(x.ev))
		for i, e := range x.ev {
			lines[i] = e.String(joined)
		}
		t.Logf("rebalance pause: %s's log after the second member's exec:\n%s", x.name, strings.Join(lines, "\n"))
	}
	first := func(ev []logEvent, msg string, after time.Time) time.Time {
		for _, e := range ev {
			if e.msg == msg && !e.at.Before(after) {
				return e.at
			}
		}
		return time.Time{}
	}
	// lastLoaded is when the last partition of the assignment at after had
	// its state loaded: the last load line before the next revocation.
	lastLoaded := func(ev []logEvent, after time.Time) time.Time {
		var at time.Time
		for _, e := range ev {
			switch {
			case e.at.Before(after) || after.IsZero():
			case e.msg == "partitions revoked" || e.msg == "partitions lost":
				return at
			case e.msg == "local state is current" || e.msg == "restored partition from the changelog":
				at = e.at
			}
		}
		return at
	}
	revokedA := first(evA, "partitions revoked", joined)
	if revokedA.IsZero() {
		t.Fatalf("the running member logged no revocation after the second member started")
	}
	assignedA := first(evA, "partitions assigned", revokedA)
	loadedA := lastLoaded(evA, assignedA)
	assignedB := first(evB, "partitions assigned", joined)
	loadedB := lastLoaded(evB, assignedB)

	// The consumed counter's longest stall that overlaps the rebalance, from
	// the revocation until the kept partitions' state is loaded (and a
	// second more for the first poll): the pause as the running member's
	// metrics show it, to within the sampling period.
	winFrom, winTo := revokedA.Add(-100*time.Millisecond), revokedA.Add(time.Second)
	if !loadedA.IsZero() {
		winTo = loadedA.Add(time.Second)
	}
	var stallFrom, stallTo time.Time
	changed := samples[0].at
	for i := 1; i < len(samples); i++ {
		if samples[i].a == samples[i-1].a {
			continue
		}
		if samples[i].at.After(winFrom) && changed.Before(winTo) && samples[i].at.Sub(changed) > stallTo.Sub(stallFrom) {
			stallFrom, stallTo = changed, samples[i].at
		}
		changed = samples[i].at
	}
	var atJoin sample
	for _, s := range samples {
		if !s.at.After(joined) {
			atJoin = s
		}
	}
	atEnd := samples[len(samples)-1]
	if stallTo.IsZero() || atEnd.a <= atJoin.a || atEnd.b <= 0 {
		t.Fatalf("processing did not resume after the rebalance: member a consumed %.0f at the join, %.0f at the end; member b %.0f",
			atJoin.a, atEnd.a, atEnd.b)
	}
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	// The figure is logged, not asserted; the bound only tells a handoff
	// from a timeout: a member that waited out its session timeout (45 s) or
	// hung in its revoke callback stands still far longer than this.
	if pause := stallTo.Sub(stallFrom); pause > maxHandoffPause {
		t.Fatalf("the running member stood still for %s across the rebalance (%s to %s after the exec): a timeout, not a handoff",
			ms(pause), ms(stallFrom.Sub(joined)), ms(stallTo.Sub(joined)))
	}
	t.Logf("rebalance pause: the running member's consumed counter stood still for %s across the rebalance (%s to %s after the exec); "+
		"longest stall after the exec %s (at +%s), baseline longest stall %s (sampled every %s)",
		ms(stallTo.Sub(stallFrom)), ms(stallFrom.Sub(joined)), ms(stallTo.Sub(joined)), ms(longest), ms(longestAt.Sub(joined)), ms(base), sampleEach)
	if !assignedA.IsZero() && !loadedA.IsZero() {
		t.Logf("rebalance pause: running member: revoked at +%s, reassigned %s later, its kept partitions' state loaded %s after the revocation",
			ms(revokedA.Sub(joined)), ms(assignedA.Sub(revokedA)), ms(loadedA.Sub(revokedA)))
	}
	if !assignedB.IsZero() && !loadedB.IsZero() {
		t.Logf("rebalance pause: moved partitions: unprocessed from the revocation until the new member had restored them, %s (its restore took %s); the new member was ready %s after its exec",
			ms(loadedB.Sub(revokedA)), ms(loadedB.Sub(assignedB)), ms(bReady.Sub(joined)))
	}
	t.Logf("rebalance pause: consumed by the running member %.0f at the join, %.0f at the end; by the new member %.0f", atJoin.a, atEnd.a, atEnd.b)
	a.terminate(30 * time.Second)
	b.terminate(30 * time.Second)
}

// ---- helpers ----

func prefixed(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// ruleTopicLine matches a stream's `topic:` line in a rule file.
var ruleTopicLine = regexp.MustCompile(`(?m)^(\s+topic:\s*)([A-Za-z0-9._-]+)\s*$`)

// writeExampleRules copies every example rule file into dir/rules with each
// stream's topic prefixed, applies replace (every old string must occur in
// some file), and returns the glob of the copies.
func writeExampleRules(t *testing.T, dir, prefix string, replace map[string]string) string {
	t.Helper()
	files, err := filepath.Glob("../../rules/*.yaml")
	if err != nil || len(files) != 5 {
		t.Fatalf("example rule files %v (%v): want five", files, err)
	}
	out := filepath.Join(dir, "rules")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if len(ruleTopicLine.FindAllString(s, -1)) == 0 {
			t.Fatalf("%s declares no `topic:` line", f)
		}
		s = ruleTopicLine.ReplaceAllString(s, "${1}"+prefix+"${2}")
		for old, repl := range replace {
			if strings.Contains(s, old) {
				used[old] = true
				s = strings.ReplaceAll(s, old, repl)
			}
		}
		if err := os.WriteFile(filepath.Join(out, filepath.Base(f)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for old := range replace {
		if !used[old] {
			t.Fatalf("no example rule file contains %q any more", old)
		}
	}
	return filepath.Join(out, "*.yaml")
}

func newProducer(t *testing.T, brokers string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Seeds(brokers)...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// keyPartitioner is the producer's partitioner: murmur2 of the key, as Java.
var keyPartitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

func partitionOf(key string, partitions int32) int32 {
	return int32(keyPartitioner.Partition(&kgo.Record{Key: []byte(key)}, int(partitions)))
}

// scenarioPlan is a sim scenario cut into chunks to produce over time.
type scenarioPlan struct {
	ds         *sim.Dataset
	partitions int32
	// head is the accounts reference table, produced first as sim orders it.
	head []sim.Event
	// chunks each hold the next slice of the business events (payments,
	// ledger, orders: one rule family, in production order) and the next
	// slice of the entitlements (the only other family, whose event times
	// run an hour further): every input moves on in every chunk.
	chunks [][]sim.Event
	// owner maps an entity key (payment, subscription, idempotency key) to
	// its account, for diagnostics.
	owner map[string]string
}

func planScenario(t *testing.T, scenario string, seed uint64, payments int, prefix string, partitions int32, n int) *scenarioPlan {
	t.Helper()
	// Hours in the past, so the clock is past every deadline once idle, and
	// well inside the broker's retention.
	start := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	ds, err := sim.Generate(scenario, seed, sim.Options{Payments: payments, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	p := &scenarioPlan{ds: ds, partitions: partitions, owner: map[string]string{}}
	var business, ents []sim.Event
	for _, e := range ds.Events {
		base := e.Topic
		e.Topic = prefix + e.Topic
		switch base {
		case sim.TopicAccounts:
			p.head = append(p.head, e)
		case sim.TopicEntitlements:
			ents = append(ents, e)
		default:
			business = append(business, e)
		}
		var v map[string]any
		if json.Unmarshal(e.Value, &v) == nil {
			for _, f := range []string{"payment_id", "subscription_id", "idempotency_key", "order_id"} {
				if s, ok := v[f].(string); ok {
					p.owner[s] = e.Key
				}
			}
		}
	}
	for i := range n {
		p.chunks = append(p.chunks, slices.Concat(business[i*len(business)/n:(i+1)*len(business)/n], ents[i*len(ents)/n:(i+1)*len(ents)/n]))
	}
	// No input partition may go more than three chunks without a record
	// before its last one (nor start later than the third chunk).
	gap, where := 0, ""
	last := map[string]int{}
	for _, topic := range sim.Topics {
		if topic == sim.TopicAccounts {
			continue
		}
		for part := range partitions {
			last[fmt.Sprintf("%s%s[%d]", prefix, topic, part)] = -1
		}
	}
	for i, c := range p.chunks {
		for _, e := range c {
			k := fmt.Sprintf("%s[%d]", e.Topic, partitionOf(e.Key, partitions))
			if i-last[k] > gap {
				gap, where = i-last[k], k
			}
			last[k] = i
		}
	}
	if gap > 3 {
		t.Fatalf("test plan: %s goes %d chunks without a record; the clock would overtake it", where, gap)
	}
	t.Logf("scenario %s seed %d: %d events (%d payments), %d violations in the truth; %d chunks, the longest gap of an input partition %d chunk(s)",
		scenario, seed, len(ds.Events), payments, len(ds.Truth.Violations), n, gap)
	return p
}

// production is one asynchronous run of a plan.
type production struct {
	plan    *scenarioPlan
	started time.Time
	done    chan struct{}
	err     error
	acked   []time.Time // per chunk, when its last record was acknowledged
}

func (p *production) finished() time.Time { return p.acked[len(p.acked)-1] }

// maxGap is the longest time between two chunks' acknowledgements.
func (p *production) maxGap() time.Duration {
	var g time.Duration
	for i := 1; i < len(p.acked); i++ {
		g = max(g, p.acked[i].Sub(p.acked[i-1]))
	}
	return g
}

// produceAsync produces the head, then a chunk every interval (or as soon as
// the previous one is acknowledged, if that takes longer), calling onChunk
// after each acknowledged chunk.
func (p *scenarioPlan) produceAsync(ctx context.Context, cl *kgo.Client, interval time.Duration, onChunk func(int)) *production {
	pr := &production{plan: p, started: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		if err := sim.Produce(ctx, cl, p.head); err != nil {
			pr.err = err
			return
		}
		for i, c := range p.chunks {
			if d := time.Until(pr.started.Add(time.Duration(i) * interval)); d > 0 {
				select {
				case <-ctx.Done():
					pr.err = ctx.Err()
					return
				case <-time.After(d):
				}
			}
			if err := sim.Produce(ctx, cl, c); err != nil {
				pr.err = fmt.Errorf("chunk %d: %w", i, err)
				return
			}
			pr.acked = append(pr.acked, time.Now())
			if onChunk != nil {
				onChunk(i)
			}
		}
	}()
	return pr
}

// warnIfProductionStalled says when some input partition went longer than
// limit between two records of the replay: then the clock may have overtaken
// events still on their way, and a failure below is the replay's, not the
// monitor's.
func (p *scenarioPlan) warnIfProductionStalled(t *testing.T, pr *production, limit time.Duration) {
	t.Helper()
	last := map[string]int{}
	var worst time.Duration
	where := ""
	for i, c := range p.chunks {
		for _, e := range c {
			k := fmt.Sprintf("%s[%d]", e.Topic, partitionOf(e.Key, p.partitions))
			if j, ok := last[k]; ok && pr.acked[i].Sub(pr.acked[j]) > worst {
				worst, where = pr.acked[i].Sub(pr.acked[j]), k
			}
			last[k] = i
		}
	}
	if worst > limit {
		t.Logf("NOTE: %s went %s between records while the replay was produced (limit %s): the idle watermark may have judged early", where, worst.Round(time.Millisecond), limit)
	} else {
		t.Logf("production: the longest pause of an input partition between records was %s", worst.Round(time.Millisecond))
	}
}

// waitSettled waits until instance alone owns every partition of topics, is
// ready, has read everything, and every rule's watermark on every partition
// has passed producedAt (the clock has overtaken the replay: every deadline in
// it is judged); then until the violations API gives the same answer for
// three seconds. It returns the violations.
func waitSettled(t *testing.T, tl *timeline, m *groupMember, adm *kadm.Client, group, instance string, topics []string,
	partitions int32, producedAt time.Time, idle, timeout time.Duration) []violation.Violation {
	t.Helper()
	deadline := time.Now().Add(timeout)
	began := time.Now()
	var last string
	for {
		last = soleOwner(adm, group, instance, topics, partitions)
		if last == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never owned every partition alone: %s", instance, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	owned := time.Now()
	tl.add("%s owns all %d partitions of %d topics alone (%s after the wait began)", instance, partitions, len(topics), owned.Sub(began).Round(time.Millisecond))
	if _, err := m.waitReady(time.Until(deadline)); err != nil {
		t.Fatal(err)
	}
	tl.add("%s ready", instance)
	var prev string
	stableSince := time.Time{}
	for {
		if gone, err := m.exitedUnexpectedly(); gone {
			t.Fatalf("%s exited (%v)", m.name, err)
		}
		why := m.unsettled(exampleRules, topics, partitions, producedAt)
		var vs []violation.Violation
		if why == "" {
			var err error
			vs, err = m.violations()
			if err != nil {
				why = err.Error()
			}
		}
		if why == "" {
			fp := fingerprint(vs)
			switch {
			case fp != prev:
				prev, stableSince = fp, time.Now()
			case time.Since(stableSince) >= 3*time.Second && time.Since(owned) >= idle+2*time.Second:
				tl.add("settled %s after sole ownership", time.Since(owned).Round(time.Millisecond))
				return vs
			}
		} else {
			prev = ""
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not settle within %s: %s", m.name, timeout, why)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// soleOwner returns "" when instance is the group's only member and owns
// every partition of topics, else what it found instead.
func soleOwner(adm *kadm.Client, group, instance string, topics []string, partitions int32) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return err.Error()
	}
	g, ok := groups[group]
	if !ok {
		return "group not described"
	}
	if g.Err != nil {
		return g.Err.Error()
	}
	var members []string
	for _, m := range g.Members {
		id := m.MemberID
		if m.InstanceID != nil {
			id = *m.InstanceID
		}
		members = append(members, id)
	}
	if g.State != "Stable" || len(g.Members) != 1 || members[0] != instance {
		return fmt.Sprintf("group %s has members %v", g.State, members)
	}
	c, ok := g.Members[0].Assigned.AsConsumer()
	if !ok {
		return "assignment is not a consumer assignment"
	}
	n := 0
	for _, at := range c.Topics {
		if slices.Contains(topics, at.Topic) {
			n += len(at.Partitions)
		}
	}
	if n != len(topics)*int(partitions) {
		return fmt.Sprintf("%s owns %d of %d partitions", instance, n, len(topics)*int(partitions))
	}
	return ""
}

func fingerprint(vs []violation.Violation) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.ID + "=" + string(v.State)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// checkDLQEmpty: the replay is valid input, so nothing may be dead-lettered.
func checkDLQEmpty(t *testing.T, adm *kadm.Client, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, group+".dlq")
	if err != nil {
		t.Errorf("dead-letter topic end offsets: %v", err)
		return
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset != 0 {
			t.Errorf("dead-letter topic %s[%d] holds %d records; the replay has no poison", o.Topic, o.Partition, o.Offset)
		}
	})
}

// compareWithTruth requires the violations to equal the truth: nothing
// missed, nothing false, no id or key twice, every state as the truth says.
func compareWithTruth(t *testing.T, p *scenarioPlan, found []violation.Violation) {
	t.Helper()
	where := func(key string) string {
		acct := p.owner[key]
		if acct == "" {
			return key + " (account unknown)"
		}
		return fmt.Sprintf("%s (%s, partition %d)", key, acct, partitionOf(acct, p.partitions))
	}
	ids := map[string]int{}
	for _, v := range found {
		ids[v.ID]++
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("violation id %s listed %d times", id, n)
		}
	}
	scores := sim.Compare(p.ds.Truth, found, exampleRules)
	for _, rule := range exampleRules {
		s := scores[rule]
		t.Logf("%-42s injected %4d found %4d missed %d false %d dup %d resolved %d/%d",
			rule, s.Injected, s.Found, s.Missed, s.FalsePositives, s.Duplicates, s.ResolvedFound, s.ResolvedExpected)
		if s.Injected == 0 {
			t.Errorf("%s: the incident injected nothing", rule)
		}
		if s.Missed != 0 || s.FalsePositives != 0 || s.Duplicates != 0 || s.Found != s.Injected || s.ResolvedFound != s.ResolvedExpected {
			var missed []string
			for _, k := range s.MissedKeys {
				missed = append(missed, where(k))
			}
			t.Errorf("%s: %d missed %v, %d false %v, %d duplicates, resolved %d of %d",
				rule, s.Missed, missed, s.FalsePositives, s.FalseKeys, s.Duplicates, s.ResolvedFound, s.ResolvedExpected)
		}
	}
	if len(scores) != len(exampleRules) {
		t.Errorf("violations of rules outside the example set: %v", scores)
	}
	want := map[string]sim.Expected{}
	for _, e := range p.ds.Truth.Violations {
		want[e.Rule+"\x00"+e.Key] = e
	}
	bad := 0
	for _, v := range found {
		e, ok := want[v.Rule+"\x00"+v.Key]
		wantState := violation.Open
		if ok && e.Resolved {
			wantState = violation.Resolved
		}
		if ok && v.State == wantState {
			continue
		}
		if bad++; bad > 15 {
			continue
		}
		resolved := ""
		if v.ResolvedAt != nil {
			resolved = fmt.Sprintf(" resolved_at %s by event time %s", v.ResolvedAt.Format(time.RFC3339Nano), v.ResolvedByEventTime)
		}
		verdict := "not in the truth"
		if ok {
			verdict = fmt.Sprintf("state %s, truth %s", v.State, wantState)
		}
		t.Errorf("%s %s: %s; trigger %s at %s[%d]@%d, event time %s, deadline %s, watermark %s, detected_at %s%s",
			v.Rule, where(v.Key), verdict, v.TriggerEventID, v.Source.Topic, v.Source.Partition, v.Source.Offset,
			v.EventTime.Format(time.RFC3339Nano), v.Deadline.Format(time.RFC3339Nano), v.Watermark.Format(time.RFC3339Nano),
			v.DetectedAt.Format(time.RFC3339Nano), resolved)
	}
	if bad > 15 {
		t.Errorf("... and %d more violations not as the truth says", bad-15)
	}
}

// timeline records what a test did, with times since it began.
type timeline struct {
	t     *testing.T
	start time.Time
	mu    sync.Mutex
	lines []string
}

func newTimeline(t *testing.T) *timeline { return &timeline{t: t, start: time.Now()} }

func (l *timeline) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%7.2fs  %s", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...)))
}

func (l *timeline) dump() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("timeline:\n%s", strings.Join(l.lines, "\n"))
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// groupMember is one `monitor run` process of a consumer group, with its own
// state directory, HTTP port and log, which a test kills, restarts and stops.
type groupMember struct {
	t       *testing.T
	name    string
	bin     string
	cfg     string
	addr    string
	logPath string
	log     *os.File

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current process has exited
	waitErr  error
	expected bool // the current process was told to exit
	starts   int
}

// chaosAlertmanager, when set, is the Alertmanager every new group member
// sends its alerts to.
var chaosAlertmanager string

func newGroupMember(t *testing.T, bin, dir, name, brokers, group, ruleGlob, instanceID string) *groupMember {
	t.Helper()
	mdir := filepath.Join(dir, name)
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", kafkatest.FreePort(t))
	seeds, _ := json.Marshal(kafkatest.Seeds(brokers))
	inst := ""
	if instanceID != "" {
		inst = "\n  instance_id: " + instanceID
	}
	cfg := filepath.Join(mdir, "monitor.yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`kafka:
  brokers: %s
  group: %s%s
state_dir: %s
rule_files: [%q]
http:
  listen: %q
  external_url: "http://%s"
%s`, seeds, group, inst, filepath.Join(mdir, "state"), ruleGlob, addr, addr, alertmanagerConfig())), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(mdir, "monitor.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	m := &groupMember{t: t, name: name, bin: bin, cfg: cfg, addr: addr, logPath: logPath, log: logf}
	t.Cleanup(func() {
		m.mu.Lock()
		cmd, done := m.cmd, m.done
		m.expected = true
		m.mu.Unlock()
		if cmd != nil {
			select {
			case <-done:
			default:
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-done
			}
		}
		logf.Close()
	})
	return m
}

// launch starts the process and returns at once.
func (m *groupMember) launch() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		select {
		case <-m.done:
		default:
			m.t.Fatalf("%s is already running", m.name)
		}
	}
	m.starts++
	fmt.Fprintf(m.log, "\n===== test: start #%d of %s at %s =====\n", m.starts, m.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(m.bin, "run", "--config", m.cfg, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = m.log, m.log
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start %s: %v", m.name, err)
	}
	done := make(chan struct{})
	m.cmd, m.done, m.expected, m.waitErr = cmd, done, false, nil
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		if m.cmd == cmd {
			m.waitErr = err
		}
		m.mu.Unlock()
		close(done)
	}()
}

func (m *groupMember) current() (*exec.Cmd, chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd, m.done
}

// kill sends SIGKILL and waits for the process to exit.
func (m *groupMember) kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.expected = true
	m.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	fmt.Fprintf(m.log, "\n===== test: SIGKILL %s at %s =====\n", m.name, time.Now().Format(time.RFC3339Nano))
}

// terminate sends SIGTERM and waits for the exit; a process that takes longer
// than timeout fails the test and is killed. It returns how long it took.
func (m *groupMember) terminate(timeout time.Duration) time.Duration {
	m.t.Helper()
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.expected = true
	m.mu.Unlock()
	began := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		m.t.Errorf("%s did not exit within %s of SIGTERM", m.name, timeout)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	m.mu.Lock()
	err := m.waitErr
	m.mu.Unlock()
	if err != nil {
		m.t.Errorf("%s exited with %v after SIGTERM", m.name, err)
	}
	return time.Since(began)
}

// exitedUnexpectedly reports whether the current process exited without
// being told to.
func (m *groupMember) exitedUnexpectedly() (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false, nil
	}
	select {
	case <-m.done:
		return !m.expected, m.waitErr
	default:
		return false, nil
	}
}

func (m *groupMember) ready() bool {
	resp, err := httpClient.Get("http://" + m.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReady polls /readyz until it answers 200, the process exits, or d
// passes. It returns how long it waited.
func (m *groupMember) waitReady(d time.Duration) (time.Duration, error) {
	began := time.Now()
	_, done := m.current()
	for !m.ready() {
		select {
		case <-done:
			return 0, fmt.Errorf("%s exited before it was ready; log:\n%s", m.name, m.logTail(6000))
		default:
		}
		if time.Since(began) > d {
			return 0, fmt.Errorf("%s not ready within %s; log:\n%s", m.name, d, m.logTail(6000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(began), nil
}

// logEvent is one line of a member's JSON log.
type logEvent struct {
	at     time.Time
	msg    string
	fields string
}

func (e logEvent) String(since time.Time) string {
	return fmt.Sprintf("  +%s %s %s", e.at.Sub(since).Round(time.Millisecond), e.msg, e.fields)
}

// logEvents returns the member's log lines logged after since whose message
// is one of msgs.
func (m *groupMember) logEvents(since time.Time, msgs ...string) []logEvent {
	b, _ := os.ReadFile(m.logPath)
	var out []logEvent
	for _, line := range strings.Split(string(b), "\n") {
		var e struct {
			TS  float64 `json:"ts"`
			Msg string  `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || !slices.Contains(msgs, e.Msg) {
			continue
		}
		at := time.Unix(0, int64(e.TS*1e9))
		if at.Before(since) {
			continue
		}
		var fields map[string]any
		_ = json.Unmarshal([]byte(line), &fields)
		for _, k := range []string{"level", "ts", "logger", "caller", "msg"} {
			delete(fields, k)
		}
		f, _ := json.Marshal(fields)
		out = append(out, logEvent{at: at, msg: e.Msg, fields: string(f)})
	}
	return out
}

// keepLogs copies the members' logs out of the test's temporary directory
// when the test failed, so they survive it, and says where.
func keepLogs(t *testing.T, members ...*groupMember) {
	if !t.Failed() {
		return
	}
	dir, err := os.MkdirTemp("", "invmon-"+strings.ReplaceAll(t.Name(), "/", "-")+"-logs-")
	if err != nil {
		return
	}
	for _, m := range members {
		if b, err := os.ReadFile(m.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(dir, m.name+".log"), b, 0o644)
		}
	}
	t.Logf("member logs kept in %s", dir)
}

func (m *groupMember) logTail(n int) string {
	b, _ := os.ReadFile(m.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// promSample is one series of the text exposition format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var promLabel = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

func (m *groupMember) scrape() ([]promSample, error) { return scrape(m.addr) }

// scrape reads the metrics a monitor serves at addr.
func scrape(addr string) ([]promSample, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var out []promSample
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		series := line[:sp]
		s := promSample{name: series, labels: map[string]string{}, value: v}
		if i := strings.IndexByte(series, '{'); i >= 0 {
			s.name = series[:i]
			for _, kv := range promLabel.FindAllStringSubmatch(series[i:], -1) {
				s.labels[kv[1]] = kv[2]
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func (m *groupMember) tryMetricSum(name string) (float64, error) { return metricSum(m.addr, name) }

// metricSum adds up every series of the metric name a monitor at addr serves.
func metricSum(addr, name string) (float64, error) {
	ss, err := scrape(addr)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, s := range ss {
		if s.name == name {
			sum += s.value
		}
	}
	return sum, nil
}

func (m *groupMember) metricSum(t *testing.T, name string) float64 {
	t.Helper()
	v, err := m.tryMetricSum(name)
	if err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	return v
}

// unsettled returns "" when the member has read every partition of topics to
// its end and every rule's watermark on every partition has passed after,
// else what is still missing.
func (m *groupMember) unsettled(rules, topics []string, partitions int32, after time.Time) string {
	ss, err := m.scrape()
	if err != nil {
		return err.Error()
	}
	wm := map[string]float64{}
	lag := map[string]float64{}
	for _, s := range ss {
		switch s.name {
		case "invmon_watermark_seconds":
			wm[s.labels["rule"]+"/"+s.labels["partition"]] = s.value
		case "invmon_consumer_lag_records":
			lag[s.labels["topic"]+"/"+s.labels["partition"]] = s.value
		}
	}
	for _, topic := range topics {
		for p := range partitions {
			k := fmt.Sprintf("%s/%d", topic, p)
			if v, ok := lag[k]; !ok || v != 0 {
				return fmt.Sprintf("lag of %s is %v (known: %v)", k, v, ok)
			}
		}
	}
	for _, r := range rules {
		for p := range partitions {
			k := fmt.Sprintf("%s/%d", r, p)
			v, ok := wm[k]
			if !ok || v < float64(after.UnixNano())/1e9 {
				return fmt.Sprintf("watermark of %s is %s, not yet past %s", k,
					time.Unix(0, int64(v*1e9)).UTC().Format(time.RFC3339), after.UTC().Format(time.RFC3339))
			}
		}
	}
	return ""
}

func (m *groupMember) violations() ([]violation.Violation, error) {
	return server.FetchViolations(context.Background(), httpClient, "http://"+m.addr, url.Values{"state": {"all"}})
}
