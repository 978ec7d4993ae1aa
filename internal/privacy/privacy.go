// Package privacy minimises what the monitor's outputs say about customers:
// the violations API, the alerts' annotations and the violation events topic. With
// it on, customer ids, entity keys and trigger event ids leave the monitor
// either redacted or as keyed HMAC tokens, and impact amounts as bands.
//
// A token is "hmac:" and the first 128 bits of HMAC-SHA256(key, id) in hex.
// Without the key nobody can tell which id a token stands for, even by
// trying every account id; with it, an operator computes the token of an id
// (`monitor redact lookup`, or the API, which takes the plain id) and finds
// its violations in any output.
//
// The monitor's state, its changelog and violations-state topics and the
// dead-letter topic keep plain data: they are internal, and the joins need
// the real keys. Protect them with Kafka ACLs and disk permissions.
package privacy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/invmon/invmon/internal/violation"
)

// Mode says how identifiers appear in the outputs.
type Mode string

const (
	// Plain shows identifiers as they are (the default).
	Plain Mode = "plain"
	// Redact replaces every identifier with "redacted".
	Redact Mode = "redact"
	// HMAC replaces every identifier with its keyed HMAC token.
	HMAC Mode = "hmac"
)

// Redacted is what an identifier becomes in Redact mode.
const Redacted = "redacted"

// TokenPrefix starts every HMAC token.
const TokenPrefix = "hmac:"

// MinKeyBytes is the shortest HMAC key accepted: 128 bits.
const MinKeyBytes = 16

// Config is the privacy section of the configuration.
type Config struct {
	// Identifiers is plain, redact or hmac. Default plain.
	Identifiers Mode `yaml:"identifiers"`
	// HMACKeyFile holds the HMAC key (at least 16 bytes; surrounding white
	// space is ignored). Required for hmac. Generate one with
	// `head -c 32 /dev/urandom | base64 > hmac.key`.
	HMACKeyFile string `yaml:"hmac_key_file"`
	// ImpactBands, when set, are ascending boundaries: each amount is shown
	// as the band it falls in ("1000-10000", "<100", ">=10000") and its
	// number as the band's lower bound. Default none: exact amounts.
	ImpactBands []float64 `yaml:"impact_bands"`
}

// Minimizer applies a Config. A nil *Minimizer shows everything as it is.
type Minimizer struct {
	mode  Mode
	key   []byte
	bands []float64
}

// New validates cfg and reads the key. Errors name the setting and the
// file, never the key.
func New(cfg Config) (*Minimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Minimizer{mode: cfg.Identifiers, bands: cfg.ImpactBands}
	if m.mode == "" {
		m.mode = Plain
	}
	if m.mode == HMAC {
		key, err := ReadKey(cfg.HMACKeyFile)
		if err != nil {
			return nil, err
		}
		m.key = key
	}
	return m, nil
}

// Validate checks the settings without reading the key file. The value of
// a wrong mode is not repeated: it may be a secret pasted into the wrong
// field.
func (cfg Config) Validate() error {
	switch cfg.Identifiers {
	case "", Plain:
		if cfg.HMACKeyFile != "" {
			return errors.New("privacy.hmac_key_file is set but privacy.identifiers is not hmac")
		}
	case Redact:
	case HMAC:
		if cfg.HMACKeyFile == "" {
			return errors.New("privacy.identifiers hmac needs privacy.hmac_key_file")
		}
	default:
		return errors.New("privacy.identifiers must be plain, redact or hmac")
	}
	if !slices.IsSorted(cfg.ImpactBands) || len(slices.Compact(slices.Clone(cfg.ImpactBands))) != len(cfg.ImpactBands) {
		return errors.New("privacy.impact_bands must be strictly ascending")
	}
	return nil
}

// ReadKey reads an HMAC key file.
func ReadKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("privacy.hmac_key_file: %w", err)
	}
	key := []byte(strings.TrimSpace(string(raw)))
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("privacy.hmac_key_file %s: the key has %d bytes, want at least %d", path, len(key), MinKeyBytes)
	}
	return key, nil
}

// Token returns the HMAC token of id under key.
func Token(key []byte, id string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	return TokenPrefix + hex.EncodeToString(h.Sum(nil)[:16])
}

// Active reports whether anything is changed.
func (m *Minimizer) Active() bool {
	return m != nil && (m.mode != Plain || len(m.bands) > 0)
}

// Mode returns the identifier mode (Plain for nil).
func (m *Minimizer) Mode() Mode {
	if m == nil {
		return Plain
	}
	return m.mode
}

// ID returns how an identifier appears in the outputs. The empty string
// stays empty (there is nothing to hide).
func (m *Minimizer) ID(id string) string {
	if m == nil || id == "" {
		return id
	}
	switch m.mode {
	case Redact:
		return Redacted
	case HMAC:
		return Token(m.key, id)
	}
	return id
}

// Matches reports whether query finds the stored (plain) identifier: the
// plain id itself always does, and in hmac mode so does its token, so a
// token copied from an alert or the topic finds the same violations.
func (m *Minimizer) Matches(stored, query string) bool {
	if stored == query {
		return true
	}
	return m != nil && m.mode == HMAC && strings.HasPrefix(query, TokenPrefix) && hmac.Equal([]byte(Token(m.key, stored)), []byte(query))
}

// Band returns the band of an amount: its label and lower bound. Without
// bands the label is "" and the amount is returned as is.
func (m *Minimizer) Band(v float64) (label string, lower float64) {
	if m == nil || len(m.bands) == 0 {
		return "", v
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	i, _ := slices.BinarySearch(m.bands, v)
	if i < len(m.bands) && m.bands[i] == v {
		i++ // a boundary belongs to the band above it
	}
	switch {
	case i == 0:
		return "<" + f(m.bands[0]), 0
	case i == len(m.bands):
		return ">=" + f(m.bands[i-1]), m.bands[i-1]
	default:
		return f(m.bands[i-1]) + "-" + f(m.bands[i]), m.bands[i-1]
	}
}

// Violation returns v as the outputs show it: customer, key and trigger
// event id minimised, impact banded. Ids, rule, times, source offsets and
// detail are kept: they identify the record in Kafka, not the customer.
func (m *Minimizer) Violation(v violation.Violation) violation.Violation {
	if !m.Active() {
		return v
	}
	v.Key = m.ID(v.Key)
	v.Customer = m.ID(v.Customer)
	v.TriggerEventID = m.ID(v.TriggerEventID)
	if label, lower := m.Band(v.Impact); label != "" {
		v.Impact, v.ImpactBand = lower, label
	}
	return v
}

// Violations applies Violation to each, in a new slice.
func (m *Minimizer) Violations(vs []violation.Violation) []violation.Violation {
	if !m.Active() {
		return vs
	}
	out := make([]violation.Violation, len(vs))
	for i, v := range vs {
		out[i] = m.Violation(v)
	}
	return out
}
