// Command cqrs-consume is the replica consumer:
//
//	cqrs-consume -w 2 [--cqrs-id ID ...] [--config FILE]
//
// It applies the messages of the configured replica queue to the tables the
// configuration declares. A service whose replicas need Go hooks builds its
// own copy of this program with package cli and its registry.
package main

import (
	"context"
	"os"

	"github.com/gocqrs/gocqrs/pkg/cli"
)

func main() {
	os.Exit(cli.Consume(context.Background(), cli.Env{}, os.Args[1:]))
}
