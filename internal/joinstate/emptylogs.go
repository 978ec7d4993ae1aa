package joinstate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// removeEmptyLogs deletes the zero-length memtable logs (.mem) and value
// logs (.vlog) in dir before Badger opens it.
//
// Badger creates a log file and only then sizes and writes its header; a
// process killed in between (a SIGKILL during start-up or at a memtable
// switch) leaves a zero-length file, and Badger v4.9 then refuses the whole
// directory at every later open ("while opening fid: N err: Create a new
// file", dgraph-io/badger#2207, unfixed upstream). An empty log holds no
// entry, so removing it loses nothing: Badger makes the next log afresh.
func removeEmptyLogs(dir string, log *zap.Logger) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state dir %q: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("state dir %q: %w", dir, err)
		}
		if info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("remove the empty log %s left by an interrupted start: %w", name, err)
		}
		log.Warn("removed an empty log file an interrupted run left in the state directory", zap.String("file", name))
	}
	return nil
}
