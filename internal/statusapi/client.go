package statusapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client reads the status API over its unix socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client of the API listening on socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}}
}

// ErrUnreachable is wrapped by the Client's errors when nothing accepts a
// connection on the status socket: the supervisor is not running. An error
// after the connection was made does not wrap it: the request may have
// been acted on.
var ErrUnreachable = errors.New("supervisor not reachable")

// APIError is an answer of the status API other than 2xx.
type APIError struct {
	Status  int    // HTTP status code
	Message string // the answer's body, trimmed
}

func (e *APIError) Error() string {
	return fmt.Sprintf("supervisor answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Get fetches path (e.g. "/v1/instances") and decodes the JSON answer into v.
// Errors wrap ErrUnreachable when no supervisor accepts the connection, or
// are an *APIError when it answers other than 2xx.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	return c.Do(ctx, http.MethodGet, path, nil, v)
}

// Post sends body as JSON to path and decodes the JSON answer into v (nil:
// ignored); errors as for Get.
func (c *Client) Post(ctx context.Context, path string, body, v any) error {
	return c.Do(ctx, http.MethodPost, path, body, v)
}

// Do sends one request; body, unless nil, is sent as JSON.
func (c *Client) Do(ctx context.Context, method, path string, body, v any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://supervisor"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.Socket, oe.Err)
		}
		// Connected, then lost: the supervisor may have acted on it.
		return fmt.Errorf("%s %s on %s: %w", method, path, c.Socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read %s from the supervisor: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s: bad JSON from the supervisor: %w", method, path, err)
	}
	return nil
}

// HTTP is the client's HTTP client, for requests Do does not cover.
func (c *Client) HTTP() *http.Client { return c.http }
