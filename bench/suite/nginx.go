package suite

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nginxConf returns a complete nginx.conf for a benchmark instance named
// name: worker_processes auto (one per core, as Debian ships it), no access
// log, its pid file under /run/lodis-bench/NAME/, and body inside the http
// block.
func nginxConf(name, body string) string {
	return fmt.Sprintf(`# Written by lodis-bench: nginx instance %[1]s.
worker_processes auto;
pid /run/lodis-bench/%[1]s/nginx.pid;
error_log stderr warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path /run/lodis-bench/%[1]s/body;
    proxy_temp_path /run/lodis-bench/%[1]s/proxy;
%[2]s
}
`, name, body)
}

// nginxHello is a server block answering 200 "hello\n" on every port, like
// bench-hello.
func nginxHello(ports []int) string {
	var b strings.Builder
	b.WriteString("    server {\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "        listen 127.0.0.1:%d;\n", p)
	}
	b.WriteString("        default_type text/plain;\n        location / { return 200 \"hello\\n\"; }\n    }\n")
	return b.String()
}

// nginxFront is an upstream over the ports and a server on front that
// retries a failed request on the next port, with keep-alive to the
// upstreams: what `lodis nginx-config` prints, for when it is not installed.
func nginxFront(front int, ports []int) string {
	var b strings.Builder
	b.WriteString("    upstream lodis {\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "        server 127.0.0.1:%d max_fails=0;\n", p)
	}
	fmt.Fprintf(&b, `        keepalive 32;
        keepalive_timeout 10s;
        keepalive_requests 10000;
    }
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://lodis;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries %d;
            proxy_next_upstream_timeout 10s;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }
    }
`, front, len(ports))
	return b.String()
}

// nginx is one nginx instance in the machine.
type nginx struct {
	name string
	conf string // config file inside the machine
	unit string // the transient unit it runs in
}

// startNginx writes the config of instance name, checks it with nginx -t and
// starts nginx in the foreground as the transient service lodis-bench-NAME,
// then waits until port answers.
func (e *env) startNginx(ctx context.Context, name, body string, port int) (*nginx, error) {
	n, err := e.nginxFiles(ctx, name, body)
	if err != nil {
		return nil, err
	}
	n.unit = "lodis-bench-nginx-" + name + ".service"
	if err := e.transient(ctx, "lodis-bench-nginx-"+name, nil, "/usr/sbin/nginx", "-c", n.conf, "-g", "daemon off;"); err != nil {
		return nil, fmt.Errorf("start nginx %s: %w", name, err)
	}
	if err := waitServing(ctx, port, "/", 10*time.Second); err != nil {
		return n, fmt.Errorf("nginx %s: %w", name, err)
	}
	return n, nil
}

// startNginxDaemon starts nginx the classic way, as a daemon that forks
// (`nginx -c FILE`), inside the transient scope lodis-bench-NAME.scope, so
// that its binary upgrade (USR2, WINCH, QUIT) works as on a host: a scope has
// no main process whose exit would end the unit.
func (e *env) startNginxDaemon(ctx context.Context, name, body string, port int) (*nginx, error) {
	n, err := e.nginxFiles(ctx, name, body)
	if err != nil {
		return nil, err
	}
	n.unit = "lodis-bench-nginx-" + name + ".scope"
	e.m.Systemctl(ctx, "stop", n.unit)
	// The daemon must not inherit the output pipe of this command, or the
	// command would not end while nginx runs.
	if _, err := e.m.Sh(ctx, fmt.Sprintf("systemd-run --quiet --scope --unit=%s --collect /usr/sbin/nginx -c %s </dev/null >/dev/null 2>&1",
		n.unit, n.conf)); err != nil {
		return nil, fmt.Errorf("start nginx %s: %w", name, err)
	}
	if err := waitServing(ctx, port, "/", 10*time.Second); err != nil {
		return n, fmt.Errorf("nginx %s: %w", name, err)
	}
	return n, nil
}

func (e *env) nginxFiles(ctx context.Context, name, body string) (*nginx, error) {
	n := &nginx{name: name, conf: fmt.Sprintf("%s/nginx-%s.conf", confDir, name)}
	if err := e.m.WriteFile(n.conf, []byte(nginxConf(name, body)), 0o644); err != nil {
		return nil, err
	}
	if _, err := e.m.Sh(ctx, fmt.Sprintf("mkdir -p /run/lodis-bench/%s && nginx -q -t -c %s", name, n.conf)); err != nil {
		return nil, fmt.Errorf("nginx %s config: %w", name, err)
	}
	return n, nil
}

func (n *nginx) stop(ctx context.Context, e *env) {
	if n != nil {
		e.m.Systemctl(ctx, "stop", n.unit)
	}
}

// pidFile returns the PID in one of the instance's pid files (nginx.pid, or
// nginx.pid.oldbin during a binary upgrade), as the machine sees it; 0 when
// the file is absent.
func (n *nginx) pidFile(ctx context.Context, e *env, file string) int {
	out, err := e.m.Output(ctx, "cat", "/run/lodis-bench/"+n.name+"/"+file)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(out))
	return p
}

// processes returns the nginx processes of the instance (masters and
// workers).
func (n *nginx) processes(ctx context.Context, e *env) ([]int, error) {
	return e.unitPIDs(ctx, n.unit)
}

// signal sends sig to pid inside the machine.
func (e *env) signal(ctx context.Context, pid int, sig syscall.Signal) error {
	_, err := e.m.Output(ctx, "kill", "-s", strconv.Itoa(int(sig)), strconv.Itoa(pid))
	return err
}

// alive reports whether pid exists inside the machine.
func (e *env) alive(ctx context.Context, pid int) bool {
	_, err := e.m.Output(ctx, "kill", "-0", strconv.Itoa(pid))
	return err == nil
}
