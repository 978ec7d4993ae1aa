// Package rules is the rule-file format: it reads rule files strictly,
// validates them, and compiles their CEL expressions once, at load time.
//
// A rule file declares streams (a topic, a format, and the CEL expressions
// that extract an event's id, key and time) and rules of four kinds:
// absence, unique, transition and state. LoadFiles returns a RuleSet, or an
// Errors value listing every problem of every file, each as
// `file:line:col: rule "name": what is wrong`, CEL errors included at the
// rule file's own line and column. Nothing here knows Kafka or Badger: the
// engine evaluates a RuleSet, the consumer feeds it, and `monitor rules
// check` and `monitor rules test` (package ruletest) read the same files.
//
// Durations in rule files, rule test files and time flags are read by
// strictyaml.ParseDuration (Prometheus syntax: 30s, 1h30m, 1d); names that become
// Prometheus or Alertmanager labels follow the legacy label-name syntax.
package rules
