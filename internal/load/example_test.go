package load_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/lodis/lodis/internal/load"
)

// A benchmark runner loads a set of ports at a fixed rate and reads the
// success ratio, the percentiles and the timeline from the Result.
func ExampleRun() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()

	res, err := load.Run(context.Background(), load.Options{
		Targets:  []string{srv.URL + "/__/time"}, // e.g. one URL per port, used round-robin
		Rate:     1000,                           // requests/s, all targets together
		Duration: 10 * time.Second,               // whichever bound comes first ends the run
		Count:    200,
		Conns:    8,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d requests, %d ok, success ratio %.3f, p99 measured: %v\n",
		res.Total, res.OK, res.SuccessRatio, res.P99 > 0)
	fmt.Printf("timeline: %d buckets of %v, first has %d requests\n",
		len(res.Timeline), res.Interval, res.Timeline[0].Sent)
	// Output:
	// 200 requests, 200 ok, success ratio 1.000, p99 measured: true
	// timeline: 2 buckets of 100ms, first has 100 requests
}
