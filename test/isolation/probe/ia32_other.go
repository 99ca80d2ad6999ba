//go:build !amd64

package main

import "fmt"

// ia32Child reports that there is no 32-bit entry to try on this
// architecture.
func ia32Child(args []string) int {
	fmt.Println("errno not amd64")
	return 0
}
