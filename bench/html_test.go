package bench_test

import (
	"bytes"
	"context"
	"html"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/bench"
)

// htmlReport runs a short bench and writes its HTML page.
func htmlReport(t *testing.T) []byte {
	t.Helper()
	cfg := shortRun
	cfg.Workloads = []string{"distinct", "hot"}
	rep, err := bench.Run(context.Background(), cfg)
	require.NoError(t, err)
	for _, res := range rep.Results {
		require.NotEmpty(t, res.Curve, res.Name)
		assert.Equal(t, 100.0, res.Curve[len(res.Curve)-1].Percentile)
		assert.Equal(t, res.Max, res.Curve[len(res.Curve)-1].Latency)
		for i := 1; i < len(res.Curve); i++ {
			assert.LessOrEqual(t, res.Curve[i-1].Latency, res.Curve[i].Latency, "%s: latency grows with the percentile", res.Name)
		}
	}
	var buf bytes.Buffer
	require.NoError(t, rep.WriteHTML(&buf))
	return buf.Bytes()
}

func TestHTMLReport(t *testing.T) {
	page := htmlReport(t)
	for _, name := range []string{"distinct", "hot"} {
		assert.Regexp(t, `<polyline class="curve" data-name="`+name+`" [^>]*points="[0-9.]+,[0-9.]+( [0-9.]+,[0-9.]+){40,}"`, string(page))
	}
	assert.Regexp(t, `>99\.9%<`, string(page))
	assert.Contains(t, html.UnescapeString(string(page)), "one op = acquire+release of a key no one else uses", "the table comes along")
	assert.NotRegexp(t, regexp.MustCompile(`<script|src=|href=`), string(page), "self-contained")
}

// The page renders in a real browser: a screenshot from headless
// Chromium shows the curves in their colours. Skipped where Chromium is
// not installed (apt install chromium).
func TestHTMLReportRendersInABrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on this machine")
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	require.NoError(t, os.WriteFile(page, htmlReport(t), 0o600))
	shot := filepath.Join(dir, "report.png")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+filepath.Join(dir, "profile"),
		"--window-size=1000,700", "--screenshot="+shot, "file://"+page).CombinedOutput()
	require.NoError(t, err, "%s", out)
	f, err := os.Open(shot)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	// Pixels of the first two curves' colours: #1f77b4 and #d62728.
	var blue, red int
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			switch {
			case near(r, 0x1f) && near(g, 0x77) && near(bl, 0xb4):
				blue++
			case near(r, 0xd6) && near(g, 0x27) && near(bl, 0x28):
				red++
			}
		}
	}
	assert.Greater(t, blue, 200, "the first curve is drawn")
	assert.Greater(t, red, 200, "the second curve is drawn")
}

func near(v, want uint32) bool { return v+12 >= want && v <= want+12 }
