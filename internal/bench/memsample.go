package bench

// What the process's resident memory is made of while a benchmark runs:
// getrusage's peak RSS is one number, and the state's memory has two parts
// that grow differently, the Go heap (Badger's caches and memtable arenas,
// the engine) and the pages of Badger's memory-mapped files.

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/dustin/go-humanize"
)

// MemSample is one reading of the process's memory, in bytes.
type MemSample struct {
	// RSS is VmRSS: resident pages, RssAnon + RssFile + RssShmem.
	RSS uint64
	// Anon is RssAnon: resident anonymous pages (the Go heap, goroutine
	// stacks, the runtime's own memory).
	Anon uint64
	// File is RssFile: resident pages of memory-mapped files (Badger's
	// tables, memtable logs and value log).
	File uint64
	// HWM is VmHWM: the kernel's peak of RSS since the process began.
	HWM uint64
	// GoHeap is the Go heap's objects, live and not yet swept
	// (/memory/classes/heap/objects:bytes); GoMapped is all the memory the
	// Go runtime has mapped and not returned to the kernel.
	GoHeap, GoMapped uint64
	// Builders is the memory of Badger's table builders, part of the Go
	// heap: the buffers (ristretto z.Allocator) in which every flushed
	// memtable and every compaction output is built whole before it is
	// written, those building now and those Badger keeps pooled for reuse.
	Builders uint64
	// Mapped is what the resident file-backed pages belong to, read from
	// /proc/self/smaps (Linux), which costs more than the rest: only
	// every MappedEvery-th sample reads it.
	Mapped MappedFiles
}

// MappedFiles splits the resident pages of mapped files by kind, in bytes.
type MappedFiles struct {
	// Tables are Badger's table files (.sst); Logs its memtables'
	// write-ahead logs (.mem) and value log (.vlog); Other every other
	// file (the binary, shared libraries).
	Tables, Logs, Other uint64
	// Unlisted is the part of Tables whose tables are not in the LSM tree
	// when sampled: a running compaction's new tables, written but not yet
	// installed, and tables a compaction replaced that a reader still
	// holds. The state's releaser (joinstate's mapped.go) releases listed
	// tables only. Zero when the sampler was not told the listed tables.
	Unlisted uint64
}

// MappedEvery is how many samples go between two readings of
// /proc/self/smaps.
const MappedEvery = 8

// MemPeaks are the largest of each figure over a run's samples. Each is
// its own maximum: the peak RSS and the peak file-backed pages need not
// come from the same sample.
type MemPeaks struct {
	MemSample
	// Samples is how many readings were taken.
	Samples int
}

// add raises the peaks to s where s is larger.
func (p *MemPeaks) add(s MemSample) {
	p.RSS = max(p.RSS, s.RSS)
	p.Anon = max(p.Anon, s.Anon)
	p.File = max(p.File, s.File)
	p.HWM = max(p.HWM, s.HWM)
	p.GoHeap = max(p.GoHeap, s.GoHeap)
	p.GoMapped = max(p.GoMapped, s.GoMapped)
	p.Builders = max(p.Builders, s.Builders)
	p.Mapped.Tables = max(p.Mapped.Tables, s.Mapped.Tables)
	p.Mapped.Logs = max(p.Mapped.Logs, s.Mapped.Logs)
	p.Mapped.Other = max(p.Mapped.Other, s.Mapped.Other)
	p.Mapped.Unlisted = max(p.Mapped.Unlisted, s.Mapped.Unlisted)
	p.Samples++
}

// ReadMem reads the process's memory now: /proc/self/status (Linux; the
// kernel figures stay 0 elsewhere) and the Go runtime's metrics, which,
// unlike runtime.ReadMemStats, do not stop the world.
func ReadMem() MemSample {
	var s MemSample
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		s = parseStatus(b)
	}
	m := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(m)
	u := func(i int) uint64 {
		if m[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return m[i].Value.Uint64()
	}
	s.GoHeap = u(0)
	s.GoMapped = u(1) - u(2)
	s.Builders = parseAllocators(z.Allocators())
	return s
}

// ReadMapped reads what the resident file-backed pages belong to from
// /proc/self/smaps; zero where it cannot be read. listed, when not nil,
// returns the ids of the tables in the LSM tree (joinstate's
// Store.TableIDs), to count the rest as Unlisted; it is read before and
// after smaps, and a table listed either time counts as listed.
func ReadMapped(listed func() map[uint64]bool) MappedFiles {
	var before map[uint64]bool
	if listed != nil {
		before = listed()
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return MappedFiles{}
	}
	if listed == nil {
		return parseSmaps(b, nil)
	}
	after := listed()
	return parseSmaps(b, func(id uint64) bool { return before[id] || after[id] })
}

// parseSmaps sums the Rss of each file mapping in a /proc/PID/smaps
// listing by the file's kind. A mapping's header line is
// "start-end perms offset dev inode path"; its Rss line follows it.
// listed, when not nil, tells which table ids are in the LSM tree.
func parseSmaps(b []byte, listed func(id uint64) bool) MappedFiles {
	var m MappedFiles
	var into *uint64
	unlisted := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		if rss, ok := bytes.CutPrefix(line, []byte("Rss:")); ok {
			if into == nil {
				continue
			}
			if fields := bytes.Fields(rss); len(fields) > 0 {
				if n, err := strconv.ParseUint(string(fields[0]), 10, 64); err == nil {
					*into += n << 10
					if unlisted {
						m.Unlisted += n << 10
					}
				}
			}
			continue
		}
		fields := bytes.Fields(line)
		if len(fields) < 5 || !bytes.Contains(fields[0], []byte("-")) || bytes.HasSuffix(fields[0], []byte(":")) {
			continue
		}
		// A new mapping: anonymous ones (no path, or [heap], [stack]) count nowhere.
		into, unlisted = nil, false
		if len(fields) < 6 || !bytes.HasPrefix(fields[5], []byte("/")) {
			continue
		}
		path := fields[5]
		switch {
		case bytes.HasSuffix(path, []byte(".sst")):
			into = &m.Tables
			if listed != nil {
				id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(string(path)), ".sst"), 10, 64)
				unlisted = err == nil && !listed(id)
			}
		case bytes.HasSuffix(path, []byte(".mem")), bytes.HasSuffix(path, []byte(".vlog")):
			into = &m.Logs
		default:
			into = &m.Other
		}
	}
	return m
}

// allocatorSize matches one tag of z.Allocators()'s summary:
// "Tag: Builder Num: 3 Size: 60 MiB . ".
var allocatorSize = regexp.MustCompile(`Size: ([0-9.]+ [KMGTPE]?i?B) \.`)

// parseAllocators sums the sizes in z.Allocators()'s summary, the only
// view ristretto gives of its allocators (to a tenth of a unit: it rounds
// with humanize.IBytes).
func parseAllocators(summary string) uint64 {
	var n uint64
	for _, m := range allocatorSize.FindAllStringSubmatch(summary, -1) {
		if b, err := humanize.ParseBytes(m[1]); err == nil {
			n += b
		}
	}
	return n
}

// parseStatus reads the memory lines of /proc/PID/status ("VmRSS:   1234 kB").
func parseStatus(b []byte) MemSample {
	var s MemSample
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(name) {
		case "VmRSS":
			dst = &s.RSS
		case "RssAnon":
			dst = &s.Anon
		case "RssFile":
			dst = &s.File
		case "VmHWM":
			dst = &s.HWM
		default:
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(string(fields[0]), 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && string(fields[1]) == "kB" {
			n <<= 10
		}
		*dst = n
	}
	return s
}

// MemSampler reads the process's memory every interval in a goroutine of
// its own and keeps the peaks.
type MemSampler struct {
	mu     sync.Mutex
	peaks  MemPeaks
	listed func() map[uint64]bool
	stop   chan struct{}
	done   chan struct{}
}

// StartMemSampler starts sampling every interval, and once right away.
func StartMemSampler(every time.Duration) *MemSampler {
	m := &MemSampler{stop: make(chan struct{}), done: make(chan struct{})}
	m.sample()
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *MemSampler) sample() {
	s := ReadMem()
	m.mu.Lock()
	if m.peaks.Samples%MappedEvery == 0 {
		s.Mapped = ReadMapped(m.listed)
	}
	m.peaks.add(s)
	m.mu.Unlock()
}

// ListTables tells the sampler which tables are in the LSM tree now (nil:
// none known), to split the tables' resident pages (MappedFiles.Unlisted).
func (m *MemSampler) ListTables(listed func() map[uint64]bool) {
	m.mu.Lock()
	m.listed = listed
	m.mu.Unlock()
}

// Peaks takes one more sample and returns the peaks so far.
func (m *MemSampler) Peaks() MemPeaks {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peaks
}

// Stop ends the sampling and returns the peaks, a last sample included.
func (m *MemSampler) Stop() MemPeaks {
	close(m.stop)
	<-m.done
	return m.Peaks()
}
