package consumer

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"

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
