package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/changes"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/rules"
)

// CheckCoPartitioned returns an error naming the topics of any rule whose
// partition counts differ. Topics that do not exist yet are not compared.
func CheckCoPartitioned(rs *rules.RuleSet, details kadm.TopicDetails) error {
	var problems []string
	for _, r := range rs.Rules {
		counts := map[string]int{}
		for _, s := range r.Streams() {
			if d, ok := details[s.Topic]; ok && d.Err == nil {
				counts[s.Topic] = len(d.Partitions)
			}
		}
		distinct := map[int]bool{}
		for _, n := range counts {
			distinct[n] = true
		}
		if len(distinct) > 1 {
			names := make([]string, 0, len(counts))
			for t, n := range counts {
				names = append(names, fmt.Sprintf("%s has %d", t, n))
			}
			sort.Strings(names)
			problems = append(problems, fmt.Sprintf("rule %q reads topics with different partition counts (%s): its events would not meet in one partition; give them equal partition counts",
				r.Name, strings.Join(names, ", ")))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// checkTopics refuses to start when one rule's topics have different
// partition counts: their events would never meet in one partition.
func (c *Consumer) checkTopics(ctx context.Context) error {
	details, err := c.adm.ListTopics(ctx, append([]string{c.cfg.DLQTopic}, c.topics...)...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	if err := CheckCoPartitioned(c.rs, details); err != nil {
		return err
	}
	for _, t := range c.topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			c.log.Warn("input topic does not exist yet; consuming it once it does", zap.String("topic", t))
		}
	}
	if c.cfg.Changelog {
		if err := c.ensureChangelog(ctx, details); err != nil {
			return err
		}
	}
	// The group's stream of violation changes is written whatever the
	// changelog setting: it is how every member's alerting and API learn
	// of the group's violations.
	if err := changes.EnsureTopic(ctx, c.adm, c.cfg.Group); err != nil {
		return err
	}
	if d, ok := details[c.cfg.DLQTopic]; !ok || d.Err != nil {
		if _, err := kafkaconn.EnsureTopic(ctx, c.adm, c.cfg.DLQTopic, 1, nil); err != nil {
			return fmt.Errorf("dead-letter topic: %w", err)
		}
	}
	c.dlqLimit = c.deadLetterLimit(ctx)
	return nil
}
