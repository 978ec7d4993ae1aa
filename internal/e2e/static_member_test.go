package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestStaticMemberTakesItsPartitionsBack is the case static membership is
// for: in a three-member group on the real broker, one member is SIGKILLed
// (no LeaveGroup, no commit of the batch in hand) and restarted a few
// seconds later. Its partitions wait for it (the others do not take them
// while it is away, and no rebalance happens), and once it is back they are
// evaluated again, shown by the group's committed offsets of every one of
// them moving past where they stood, within 5 s of the restart. Without an
// instance id the restarted member would wait out the 45 s session timeout
// of its old self first.
func TestStaticMemberTakesItsPartitionsBack(t *testing.T) {
	const (
		partitions = 6
		away       = 3 * time.Second
		bound      = 5 * time.Second
	)
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("static%d-", time.Now().UnixNano())
	group := prefix + "group"
	topics := []string{prefix + "payments", prefix + "ledger"}
	kafkatest.CreateTopics(t, brokers, partitions, topics...)
	dir := t.TempDir()
	ruleGlob := writeRules(t, dir, prefix)
	bin := buildMonitor(t)
	var members []*groupMember
	for _, name := range []string{"a", "b", "c"} {
		members = append(members, newGroupMember(t, bin, dir, name, brokers, group, ruleGlob, prefix+name))
	}
	victim := members[2]
	defer func() {
		if t.Failed() {
			for _, m := range members {
				t.Logf("----- %s log (tail) -----\n%s", m.name, m.logTail(4000))
			}
			keepLogs(t, members...)
		}
	}()
	for _, m := range members {
		m.launch()
	}
	for _, m := range members {
		if _, err := m.waitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cl := newProducer(t, brokers)
	adm := kadm.NewClient(cl)

	// The group settles with three members, each owning its partitions.
	var before map[string][]int32
	deadline := time.Now().Add(60 * time.Second)
	for {
		var state string
		before, state = assignment(adm, group)
		if state == "Stable" && len(before) == 3 && len(before[members[0].name]) > 0 && len(before[members[1].name]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group never settled with three members: %s %v", state, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The victim's partitions: those a and b do not own (by name, so the
	// test reads the same when the victim has no instance id).
	var victimParts []int32
	for p := int32(0); p < partitions; p++ {
		if !slices.Contains(before[members[0].name], p) && !slices.Contains(before[members[1].name], p) {
			victimParts = append(victimParts, p)
		}
	}
	t.Logf("assignment (partition numbers of both topics): %v; the victim %s owns %v", before, victim.name, victimParts)

	// A steady feed on every partition: captured payments and their ledger
	// entries, keyed by account, every 10 ms.
	feedCtx, stopFeed := context.WithCancel(context.Background())
	var feedWG sync.WaitGroup
	var feedMu sync.Mutex
	var feedErr error
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
			now := time.Now().UTC()
			id := fmt.Sprintf("st-%d", n)
			acct := fmt.Sprintf("acct-%03d", n%120)
			pay := fmt.Sprintf(`{"event_id":"%s-captured","idempotency_key":"idem-%s","payment_id":"%s","account_id":"%s","status":"captured","amount_cents":1000,"currency":"USD","occurred_at":"%s"}`,
				id, id, id, acct, now.Format(time.RFC3339Nano))
			led := fmt.Sprintf(`{"entry_id":"le-%s","idempotency_key":"idem-%s","payment_id":"%s","account_id":"%s","amount_cents":1000,"direction":"credit","occurred_at":"%s"}`,
				id, id, id, acct, now.Format(time.RFC3339Nano))
			for topic, v := range map[string]string{topics[0]: pay, topics[1]: led} {
				cl.Produce(feedCtx, &kgo.Record{Topic: topic, Key: []byte(acct), Value: []byte(v), Timestamp: now}, func(_ *kgo.Record, err error) {
					if err != nil && !errors.Is(err, context.Canceled) {
						feedMu.Lock()
						feedErr = errors.Join(feedErr, err)
						feedMu.Unlock()
					}
				})
			}
		}
	}()
	defer func() { stopFeed(); feedWG.Wait() }()

	// committed returns the group's committed offset of each of the
	// victim's partitions of both topics.
	committed := func() map[string]int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("fetch offsets: %v", err)
		}
		out := map[string]int64{}
		for _, topic := range topics {
			for _, p := range victimParts {
				o, _ := offs.Lookup(topic, p)
				out[fmt.Sprintf("%s[%d]", topic, p)] = o.At
			}
		}
		return out
	}
	// advanced reports whether every offset of now is past the one of then.
	advanced := func(then, now map[string]int64) bool {
		for k, v := range then {
			if now[k] <= v {
				return false
			}
		}
		return true
	}
	// Steady state: the victim evaluates and commits its partitions.
	start := committed()
	deadline = time.Now().Add(30 * time.Second)
	for !advanced(start, committed()) {
		if time.Now().After(deadline) {
			t.Fatalf("the victim's partitions are not being committed: %v then %v", start, committed())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// SIGKILL: no LeaveGroup. While it is away its partitions wait: no
	// other member takes them and their committed offsets stand still.
	victim.kill()
	killedAt := time.Now()
	// A commit the victim sent just before the kill may still land.
	time.Sleep(500 * time.Millisecond)
	atKill := committed()
	time.Sleep(away - 500*time.Millisecond)
	whileAway := committed()
	during, state := assignment(adm, group)
	if !maps.Equal(atKill, whileAway) {
		t.Errorf("the victim's partitions were committed while it was away (by another member?): %v then %v", atKill, whileAway)
	}
	for _, m := range members[:2] {
		if !slices.Equal(during[m.name], before[m.name]) {
			t.Errorf("while the victim was away %s owned %v, before %v: the group rebalanced (%s)", m.name, during[m.name], before[m.name], state)
		}
	}

	// Restart: the partitions are evaluated again within the bound.
	restartedAt := time.Now()
	victim.launch()
	var readyAfter time.Duration
	var evaluatedAfter time.Duration
	for evaluatedAfter == 0 {
		now := committed()
		if readyAfter == 0 && victim.ready() {
			readyAfter = time.Since(restartedAt)
		}
		if advanced(whileAway, now) {
			evaluatedAfter = time.Since(restartedAt)
			break
		}
		if gone, err := victim.exitedUnexpectedly(); gone {
			t.Fatalf("the restarted member exited: %v", err)
		}
		if time.Since(restartedAt) > 60*time.Second {
			t.Fatalf("the victim's partitions were not evaluated within 60 s of its restart: %v, at the restart %v", now, whileAway)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, state := assignment(adm, group)
	t.Logf("static member %s: SIGKILLed, away %s, restarted; ready %s and every one of its %d partitions evaluated and committed again %s after the restart (%s after the kill); group %s, assignment %v",
		victim.name, away, readyAfter.Round(time.Millisecond), 2*len(victimParts), evaluatedAfter.Round(time.Millisecond),
		time.Since(killedAt).Round(time.Millisecond), state, after)
	if evaluatedAfter > bound {
		t.Errorf("the victim's partitions were evaluated again %s after its restart, want within %s", evaluatedAfter.Round(time.Millisecond), bound)
	}
	if !slices.Equal(after[victim.name], victimParts) && after[victim.name] != nil {
		t.Errorf("the restarted member owns %v, before %v: a static member takes its own partitions back", after[victim.name], victimParts)
	}
	stopFeed()
	feedWG.Wait()
	feedMu.Lock()
	defer feedMu.Unlock()
	if feedErr != nil {
		t.Fatalf("feed: %v", feedErr)
	}
	for _, m := range members {
		m.terminate(30 * time.Second)
	}
}

// assignment returns each member's (by instance id suffix: its name)
// partition numbers, sorted and deduplicated over the topics, and the group
// state.
func assignment(adm *kadm.Client, group string) (map[string][]int32, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, err.Error()
	}
	g := groups[group]
	if g.Err != nil {
		return nil, g.Err.Error()
	}
	out := map[string][]int32{}
	for _, m := range g.Members {
		name := m.MemberID
		if m.InstanceID != nil {
			name = *m.InstanceID
			name = name[strings.LastIndex(name, "-")+1:]
		}
		c, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		seen := map[int32]bool{}
		for _, at := range c.Topics {
			for _, p := range at.Partitions {
				if !seen[p] {
					seen[p] = true
					out[name] = append(out[name], p)
				}
			}
		}
		sort.Slice(out[name], func(i, j int) bool { return out[name][i] < out[name][j] })
	}
	return out, g.State
}
