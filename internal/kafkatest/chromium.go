package kafkatest

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Chromium is Debian's headless chromium, for tests that look at pages the
// way a person's browser renders them.
type Chromium struct {
	bin string
}

// NewChromium finds chromium; without it the test is skipped, or fails
// under CI=true.
func NewChromium(t testing.TB) *Chromium {
	t.Helper()
	for _, c := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(c); err == nil {
			return &Chromium{bin: p}
		}
	}
	unavailable(t, "chromium not found (Debian package chromium)")
	return nil
}

func (c *Chromium) run(t testing.TB, width, height int, url string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0",
		"--window-size=" + strconv.Itoa(width) + "," + strconv.Itoa(height)}
	cmd := exec.CommandContext(ctx, c.bin, append(base, append(args, url)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v %s: %v\n%s", args, url, err, errb.String())
	}
	return out.String(), errb.String()
}

// DOM loads url and returns the DOM as rendered (after the browser parsed
// and laid it out), and every line the page logged to the browser console:
// a script error or an asset its Content-Security-Policy blocked shows there.
func (c *Chromium) DOM(t testing.TB, url string) (dom string, consoleLines []string) {
	t.Helper()
	dom, logs := c.run(t, 1280, 1600, url, "--dump-dom")
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, ":CONSOLE") {
			consoleLines = append(consoleLines, line)
		}
	}
	return dom, consoleLines
}

// Screenshot renders url into the PNG file at path, width × height pixels,
// and returns the decoded image.
func (c *Chromium) Screenshot(t testing.TB, url, path string, width, height int) image.Image {
	t.Helper()
	c.run(t, width, height, url, "--screenshot="+path, "--hide-scrollbars")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	return img
}

// Colours counts the distinct colours of a sample of img's pixels: a blank
// or error page has a handful, a rendered table and chart many.
func Colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 5 {
		for x := b.Min.X; x < b.Max.X; x += 5 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}
