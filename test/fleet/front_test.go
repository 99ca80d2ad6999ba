package fleet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// frontAddr is where the front nginx listens, on the fabric namespace's own
// loopback: the load runs in that namespace too.
const frontAddr = "127.0.0.1:8000"

// frontConf balances over every host:port the way `lodis nginx-config` does
// for one host's ports: a request that fails (refused, reset, 502, 503,
// timeout) is retried on another upstream, so a client of the front sees
// none of it. X-Lodis-Upstream says which upstream answered.
var frontConf = template.Must(template.New("nginx").Parse(`# lodis fleet test front
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    upstream lodis_fleet {
{{- range .Upstreams}}
        server {{.}} max_fails=0;
{{- end}}
        keepalive 32;
        keepalive_timeout 10s;
        keepalive_requests 10000;
    }
    server {
        listen {{.Listen}};
        location / {
            proxy_pass http://lodis_fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries {{len .Upstreams}};
            proxy_next_upstream_timeout 10s;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            add_header X-Lodis-Upstream $upstream_addr always;
        }
    }
}
`))

// front is the nginx in the fabric namespace.
type front struct {
	dir       string
	cmd       *exec.Cmd
	done      chan error
	upstreams []string
}

// startFront writes the configuration for upstreams (host:port) and starts
// nginx in namespace fabric, in the foreground, as a child of the test.
func startFront(ctx context.Context, c *controller, dir string, upstreams []string) (*front, error) {
	f := &front{dir: dir, done: make(chan error, 1), upstreams: upstreams}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var conf bytes.Buffer
	if err := frontConf.Execute(&conf, struct {
		Dir, Listen string
		Upstreams   []string
	}{dir, frontAddr, upstreams}); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, conf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	f.cmd = c.inFabric(context.Background(), "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "nginx-error.log"), "-g", "daemon off;")
	log, err := os.Create(filepath.Join(dir, "nginx.out"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	f.cmd.Stdout, f.cmd.Stderr = log, log
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	// Up once it answers through to a worker.
	var last string
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := c.inFabric(ctx, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://"+frontAddr+"/").CombinedOutput()
		if err == nil && string(out) == "200" {
			return f, nil
		}
		last = fmt.Sprintf("%s %v", out, err)
		select {
		case err := <-f.done:
			f.done <- err
			return f, fmt.Errorf("nginx exited: %v: %s", err, f.errorLog())
		default:
		}
		if time.Now().After(deadline) {
			return f, fmt.Errorf("the front does not answer 200 after 30 s (last: %s): %s", last, f.errorLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// upstreamsSeen sends n requests through the front and returns how many
// each upstream answered.
func (f *front) upstreamsSeen(ctx context.Context, c *controller, n int) (map[string]int, error) {
	args := []string{"curl", "-sS", "--max-time", "10", "-D", "-", "-o", "/dev/null"}
	for range n {
		args = append(args, "http://"+frontAddr+"/")
	}
	out, err := c.inFabric(ctx, args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("curl through the front: %w: %s", err, out)
	}
	seen := map[string]int{}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(l)), "x-lodis-upstream:"); ok {
			seen[strings.TrimSpace(v)]++
		}
	}
	return seen, nil
}

func (f *front) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(f.dir, "nginx-error.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}

// Close stops nginx (SIGQUIT: a graceful stop; SIGKILL after 10 s).
func (f *front) Close() {
	if f == nil || f.cmd == nil || f.cmd.Process == nil {
		return
	}
	f.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		f.cmd.Process.Kill()
		<-f.done
	}
}
