module github.com/lodis/lodis

go 1.26.8

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/sirupsen/logrus v1.10.2
)

require golang.org/x/sys v0.49.0 // indirect
