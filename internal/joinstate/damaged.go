package joinstate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// DamagedError says the state directory failed Badger's checksum
// verification: a table or value log file no longer holds what was written.
// The monitor stops instead of running on part of its state.
type DamagedError struct {
	// Dir is the state directory and File the damaged file in it, when
	// Badger names one.
	Dir, File string
	Err       error
}

func (e *DamagedError) Error() string {
	file := "a file"
	if e.File != "" {
		file = e.File
	}
	return fmt.Sprintf("state directory %q is damaged: %s failed checksum verification (%v). "+
		"Recovery: stop the monitor, move the state directory aside (keep it for analysis) and start it again with an empty one: "+
		"with kafka.changelog on (the default) every partition's state is rebuilt from the <group>.changelog topic; "+
		"without the changelog, also reset the group's offsets to the earliest retained records so the inputs are evaluated again",
		e.Dir, file, e.Err)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// damagedFile finds the file name in a Badger error: it names tables as
// NNNNNN.sst and value logs as NNNNNN.vlog, with or without their directory.
var damagedFile = regexp.MustCompile(`[^\s"':]*?(\d+\.(?:sst|vlog|mem))`)

// asDamaged wraps err in a DamagedError when it reports a checksum failure.
func asDamaged(dir string, err error) error {
	if err == nil || !checksumFailure.MatchString(err.Error()) {
		return err
	}
	de := &DamagedError{Dir: dir, Err: err}
	if m := damagedFile.FindStringSubmatch(err.Error()); m != nil {
		de.File = m[1]
	}
	return de
}

var checksumFailure = regexp.MustCompile(`(?i)checksum|corrupt|truncate`)

// verifyTables checks the checksum of every block of every table in dir
// before Badger opens it. Badger's own verification at open skips a table
// whose checksum fails (serving the state without it) or panics on a
// damaged index; and its iterators end silently at a damaged block. So the
// tables are read once here, each in isolation, and the first damaged one
// is named.
func verifyTables(dir string) error {
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return nil
	}
	compression, err := tableCompressions(dir)
	if err != nil {
		return &DamagedError{Dir: dir, File: badger.ManifestFilename, Err: err}
	}
	for _, name := range tables {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".sst"), 10, 64)
		c, listed := compression[id]
		if err != nil || !listed {
			// Not a table of the manifest: Badger deletes it at open.
			continue
		}
		if err := verifyTable(name, c); err != nil {
			return &DamagedError{Dir: dir, File: filepath.Base(name), Err: err}
		}
	}
	return nil
}

// tableCompressions reads each table's compression from dir's manifest:
// a table does not record it itself, and directories written before the
// monitor turned compression off (see Open) hold Snappy tables, later ones
// uncompressed tables, and after compactions both at once.
func tableCompressions(dir string) (map[uint64]options.CompressionType, error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, _, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	out := make(map[uint64]options.CompressionType, len(m.Tables))
	for id, t := range m.Tables {
		out[id] = t.Compression
	}
	return out, nil
}

func verifyTable(name string, compression options.CompressionType) (err error) {
	mf, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return fmt.Errorf("open: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading it failed: %v", r)
		}
	}()
	// The monitor writes tables with Badger's default block size; the
	// compression is the manifest's.
	// OpenTable closes the file when it fails. The table is not released
	// with DecrRef, which deletes a table's file once unreferenced: only its
	// read-only mapping is closed.
	if _, err := table.OpenTable(mf, table.Options{ChkMode: options.OnTableRead, BlockSize: 4 << 10, Compression: compression}); err != nil {
		return err
	}
	return mf.Close(-1)
}
