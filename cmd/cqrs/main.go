// Command cqrs is gocqrs's operator tool: relay, migrate, dead letters and
// more. Run `cqrs -h` for the commands.
package main

import (
	"context"
	"os"

	"github.com/gocqrs/gocqrs/pkg/cli"
)

func main() {
	os.Exit(cli.Cqrs(context.Background(), cli.Env{}, os.Args[1:]))
}
