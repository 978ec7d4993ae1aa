package bench

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2/z"
)

func TestParseStatusReadsTheMemoryLines(t *testing.T) {
	status := []byte("Name:\tmonitor\nVmPeak:\t 2000000 kB\nVmHWM:\t  500000 kB\nVmRSS:\t  400000 kB\n" +
		"RssAnon:\t  300000 kB\nRssFile:\t   99000 kB\nRssShmem:\t    1000 kB\nThreads:\t12\n")
	got := parseStatus(status)
	want := MemSample{RSS: 400000 << 10, Anon: 300000 << 10, File: 99000 << 10, HWM: 500000 << 10}
	if got != want {
		t.Fatalf("parseStatus = %+v, want %+v", got, want)
	}
}

func TestMemSamplerKeepsThePeaks(t *testing.T) {
	m := StartMemSampler(time.Millisecond)
	// A 64 MiB allocation, touched and kept alive until the sampler saw it.
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = 1
	}
	time.Sleep(20 * time.Millisecond)
	runtime.KeepAlive(big)
	p := m.Stop()
	if p.Samples < 2 {
		t.Fatalf("%d samples, want several", p.Samples)
	}
	if p.GoHeap < 64<<20 || p.GoMapped < p.GoHeap {
		t.Errorf("Go heap peak %d, mapped %d: want at least the 64 MiB allocation, mapped >= heap", p.GoHeap, p.GoMapped)
	}
	if _, err := os.Stat("/proc/self/status"); err == nil {
		if p.RSS < 64<<20 || p.Anon < 64<<20 || p.HWM < p.RSS {
			t.Errorf("peaks %+v: want RSS and anonymous at least the 64 MiB allocation, VmHWM >= RSS", p)
		}
	}
}

func TestParseAllocatorsSumsEveryTag(t *testing.T) {
	got := parseAllocators("Tag: Builder Num: 3 Size: 60 MiB . Tag: TableBuilder Num: 1 Size: 4.0 MiB . ")
	if want := uint64(64 << 20); got != want {
		t.Fatalf("parseAllocators = %d, want %d", got, want)
	}
	if got := parseAllocators(""); got != 0 {
		t.Fatalf("parseAllocators of no allocators = %d, want 0", got)
	}
}

func TestReadMemCountsBadgersAllocators(t *testing.T) {
	before := ReadMem().Builders
	a := z.NewAllocator(16<<20, "test")
	defer a.Release()
	if got := ReadMem().Builders; got < before+16<<20 {
		t.Fatalf("builders %d with a 16 MiB allocator alive, %d before: want it counted", got, before)
	}
}

func TestParseSmapsSplitsFileBackedPagesByKind(t *testing.T) {
	smaps := []byte(`55ab2a452000-55ab2a454000 r-xp 00000000 fe:00 247278                     /usr/bin/monitor
Size:                 24 kB
Rss:                  20 kB
VmFlags: rd ex mr mw me
7f0000000000-7f0000100000 r--s 00000000 fe:00 1001                       /state/000012.sst
Size:               1024 kB
Rss:                 300 kB
7f0000100000-7f0000200000 rw-s 00000000 fe:00 1002                       /state/00007.mem
Rss:                 100 kB
7f0000200000-7f0000300000 rw-s 00000000 fe:00 1003                       /state/000001.vlog
Rss:                  8 kB
7f0000300000-7f0000400000 rw-p 00000000 00:00 0 
Rss:                 999 kB
7f0000400000-7f0000500000 r--s 00000000 fe:00 1004                       /state/000009.sst (deleted)
Rss:                  12 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
`)
	got := parseSmaps(smaps, nil)
	want := MappedFiles{Tables: 312 << 10, Logs: 108 << 10, Other: 20 << 10}
	if got != want {
		t.Fatalf("parseSmaps = %+v, want %+v", got, want)
	}
	// Table 12 is in the LSM tree, 9 (deleted, still mapped) is not.
	got = parseSmaps(smaps, func(id uint64) bool { return id == 12 })
	want.Unlisted = 12 << 10
	if got != want {
		t.Fatalf("parseSmaps with table 12 listed = %+v, want %+v", got, want)
	}
}

// The machine's cores busy over a stretch in which this test keeps one core
// busy is more than nothing and at most every core.
func TestMachineCoresBusyCountsThisProcesssWork(t *testing.T) {
	then := readMachineCPU()
	if then.total == 0 {
		t.Fatal("/proc/stat not read")
	}
	x := 0
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	busy := readMachineCPU().coresBusySince(then)
	if busy <= 0.3 || busy > float64(runtime.NumCPU())+0.01 {
		t.Fatalf("cores busy while one spun (%d turns): %.2f; want above 0.3 and at most %d", x, busy, runtime.NumCPU())
	}
}
