package observability

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

// screenshotEnv names where TestStatusPageInChromium saves its screenshot;
// by default a file in the temporary directory (its path is logged). To
// refresh the one in the docs:
//
//	LODIS_STATUS_PAGE_PNG=$PWD/docs/status-page.png go test ./test/observability
const screenshotEnv = "LODIS_STATUS_PAGE_PNG"

// webDriver drives a headless Chromium through ChromeDriver's W3C WebDriver
// protocol (plain HTTP and JSON).
type webDriver struct {
	cmd     *exec.Cmd
	done    chan error
	base    string
	session string
}

// chromeArgs run Chromium headless as root on a closed network: no sandbox
// (root), no background connections, a fresh profile.
func chromeArgs(profile string) []string {
	return []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + profile, "--window-size=1280,1500", "--hide-scrollbars"}
}

func startWebDriver(t *testing.T) *webDriver {
	t.Helper()
	d := &webDriver{done: make(chan error, 1), base: fmt.Sprintf("http://127.0.0.1:%d", driverPort)}
	logf, err := os.Create(filepath.Join(t.TempDir(), "chromedriver.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command("chromedriver", fmt.Sprintf("--port=%d", driverPort), "--log-path="+logf.Name())
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	go func() { d.done <- d.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		if d.session != "" {
			d.call(t, http.MethodDelete, "/session/"+d.session, nil, nil)
		}
		stopProcess(d.cmd, d.done)
	})
	err = testenv.WaitFor(context.Background(), 20*time.Second, func() (bool, string) {
		var st struct {
			Ready bool `json:"ready"`
		}
		err := d.try(http.MethodGet, "/status", nil, &st)
		return err == nil && st.Ready, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatalf("chromedriver: %v", err)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":        "chrome",
		"goog:chromeOptions": map[string]any{"binary": "/usr/bin/chromium", "args": chromeArgs(t.TempDir())},
	}}}
	var s struct {
		SessionID string `json:"sessionId"`
	}
	d.call(t, http.MethodPost, "/session", caps, &s)
	d.session = s.SessionID
	return d
}

// try sends one WebDriver command and decodes its "value" into out.
func (d *webDriver) try(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, d.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s %s: %d %.300s", method, path, resp.StatusCode, b)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %.500s", method, path, resp.StatusCode, env.Value)
	}
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

func (d *webDriver) call(t testing.TB, method, path string, body, out any) {
	t.Helper()
	if err := d.try(method, path, body, out); err != nil {
		t.Fatal(err)
	}
}

func (d *webDriver) open(t testing.TB, url string) {
	d.call(t, http.MethodPost, "/session/"+d.session+"/url", map[string]string{"url": url}, nil)
}

// eval runs script in the page and decodes what it returns into out.
func (d *webDriver) eval(t testing.TB, script string, out any) {
	t.Helper()
	d.call(t, http.MethodPost, "/session/"+d.session+"/execute/sync", map[string]any{"script": script, "args": []any{}}, out)
}

func (d *webDriver) screenshot(t testing.TB) []byte {
	t.Helper()
	var b64 string
	d.call(t, http.MethodGet, "/session/"+d.session+"/screenshot", nil, &b64)
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pageState is what the test reads of the page as Chromium shows it.
type pageState struct {
	Origin float64           `json:"origin"` // performance.timeOrigin: changes at each load
	Title  string            `json:"title"`
	Ports  map[string]string `json:"ports"` // port → the row's class and text
	Events string            `json:"events"`
}

const readPage = `const ports = {};
for (const r of document.querySelectorAll('#ports tr[data-port]')) ports[r.dataset.port] = r.className + ' | ' + r.innerText.replace(/\s+/g, ' ');
const ev = document.querySelector('#events');
return {origin: performance.timeOrigin, title: document.title, ports: ports, events: ev ? ev.innerText : ''};`

func (d *webDriver) read(t testing.TB) pageState {
	t.Helper()
	var s pageState
	d.eval(t, readPage, &s)
	return s
}

// TestStatusPageInChromium: the page, as a real browser renders it, shows
// every port; when a worker is killed it changes by itself (it reloads on
// its own: the test never navigates again), the port's row and the events
// saying so. A screenshot is saved.
func TestStatusPageInChromium(t *testing.T) {
	victim := port(2)
	pid := startWorker(t, victim)
	d := startWebDriver(t)
	url := "http://" + metricsAddr + "/"
	d.open(t, url)
	var first pageState
	err := testenv.WaitFor(context.Background(), 20*time.Second, func() (bool, string) {
		first = d.read(t)
		row := first.Ports[fmt.Sprint(victim)]
		return len(first.Ports) >= nPorts && strings.Contains(row, fmt.Sprint(pid)), fmt.Sprintf("%+v", first)
	})
	if err != nil {
		t.Fatalf("the page in Chromium: %v", err)
	}
	if !strings.HasPrefix(first.Title, "lodis on ") {
		t.Errorf("title %q", first.Title)
	}
	for i := range nPorts {
		row, ok := first.Ports[fmt.Sprint(port(i))]
		if !ok {
			t.Errorf("port %d is not on the page: %v", port(i), first.Ports)
			continue
		}
		if !strings.Contains(row, "active/") {
			t.Errorf("port %d: row %q shows no socket state", port(i), row)
		}
	}
	before := first.Ports[fmt.Sprint(victim)]
	t.Logf("before: %s", before)

	killed := time.Now()
	kill9(t, pid)
	var after pageState
	err = testenv.Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		after = d.read(t)
		row := after.Ports[fmt.Sprint(victim)]
		return row != "" && row != before && !strings.Contains(row, fmt.Sprintf(" %d ", pid)) && after.Origin != first.Origin &&
			strings.Contains(after.Events, fmt.Sprint(victim)), fmt.Sprintf("row %q", row)
	})
	if err != nil {
		t.Fatalf("the page did not change after the kill: %v", err)
	}
	t.Logf("the page changed by itself %v after the kill -9 (it reloads every 2 s): %s", within(killed), after.Ports[fmt.Sprint(victim)])
	if !strings.Contains(after.Events, "failed") {
		t.Errorf("the events on the page do not show the failure:\n%s", after.Events)
	}
	// The page keeps reloading by itself.
	origin := after.Origin
	testenv.Poll(context.Background(), 10*time.Second, 200*time.Millisecond, func() (bool, string) {
		after = d.read(t)
		return after.Origin != origin, "no reload"
	})
	if after.Origin == origin {
		t.Error("the page did not reload itself within 10 s")
	}

	// A fresh worker, then the screenshot: every port, the last roll-out,
	// the kill among the events.
	startWorker(t, victim)
	time.Sleep(2500 * time.Millisecond)
	shot := d.screenshot(t)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 600 || colours(img) < 8 {
		t.Errorf("screenshot %v with %d colours: not a rendered page", b, colours(img))
	}
	path := os.Getenv(screenshotEnv)
	if path == "" {
		path = filepath.Join(os.TempDir(), "lodis-status-page.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
}

// colours counts the distinct colours of img, up to 1000.
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(seen) < 1000; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}
