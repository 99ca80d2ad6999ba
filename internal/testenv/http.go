package testenv

import (
	"net/http"
	"time"
)

// Client is an HTTP client for tests: a 5 s timeout, and no connection kept
// alive between requests (an idle keep-alive connection would keep a worker
// from exiting when idle).
var Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
