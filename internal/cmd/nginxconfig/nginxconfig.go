// Package nginxconfig is `lodis nginx-config`.
package nginxconfig

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/nginxconf"
	"github.com/lodis/lodis/internal/systemd"
)

// Main runs `lodis nginx-config`.
func Main(args []string, stderr io.Writer) int { return run(args, os.Stdout, stderr) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis nginx-config", flag.ContinueOnError)
	c := nginxconf.Config{}
	ports := fs.String("ports", "", "ports to spread over, e.g. 8080-8089 (default: the enabled lodis@PORT.socket units, read from systemd)")
	fs.StringVar(&c.Upstream, "upstream", "lodis", "name of the upstream block")
	fs.StringVar(&c.Listen, "listen", "80", "nginx listen directive for the front, e.g. 80 or 127.0.0.1:8000")
	fs.StringVar(&c.Host, "host", "127.0.0.1", "address the lodis ports are reached at")
	fs.IntVar(&c.KeepAlive, "keepalive", 32, "idle keep-alive connections to the workers, per nginx worker process")
	user := fs.Bool("user", false, "read the user manager's units")
	bus := fs.String("bus", "", "D-Bus address of systemd")
	if err := cli.Parse(fs, args, "lodis nginx-config [--ports LIST] [--listen ADDR] > /etc/nginx/conf.d/lodis.conf", stderr); err != nil {
		return cli.Exit("lodis nginx-config", err, stderr)
	}
	if !validName(c.Upstream) {
		fmt.Fprintf(stderr, "lodis nginx-config: bad --upstream %q: want letters, digits, '-' or '_'\n", c.Upstream)
		return 2
	}
	if c.Listen == "" || strings.ContainsAny(c.Listen, ";{} \t\n") {
		fmt.Fprintf(stderr, "lodis nginx-config: bad --listen %q: want a port or ADDRESS:PORT\n", c.Listen)
		return 2
	}
	if net.ParseIP(strings.Trim(c.Host, "[]")) == nil {
		fmt.Fprintf(stderr, "lodis nginx-config: bad --host %q: want an IP address\n", c.Host)
		return 2
	}
	if strings.Contains(c.Host, ":") && !strings.HasPrefix(c.Host, "[") {
		c.Host = "[" + c.Host + "]"
	}
	if c.KeepAlive < 1 {
		fmt.Fprintf(stderr, "lodis nginx-config: bad --keepalive %d: must be at least 1\n", c.KeepAlive)
		return 2
	}
	var err error
	if *ports != "" {
		c.Ports, err = nginxconf.ParsePorts(*ports)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Ports, err = nginxconf.EnabledPorts(ctx, systemd.BusOptions{User: *user, Address: *bus})
		if err != nil {
			err = fmt.Errorf("%w; pass --ports to name the ports yourself", err)
		}
	}
	if err == nil {
		err = nginxconf.Render(stdout, c)
	}
	if err != nil {
		fmt.Fprintf(stderr, "lodis nginx-config: %v\n", err)
		return 1
	}
	return 0
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
