// Command custom-consumer is cqrs-consume built by a service whose replica
// needs Go code: a create/update hook that derives a column, and a raw
// replica with no table that reacts to messages. Tables that need no code
// can still be declared in the configuration file next to these.
//
//	go build -o my-consumer ./examples/custom-consumer
//	CQRS_CONFIG=examples/config/replica.yaml ./my-consumer -w 2
//
// Everything cqrs-consume does (flags, configuration, workers, clean
// shutdown on SIGINT/SIGTERM) comes from package cli; only the registry is
// this program's own.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/gocqrs/gocqrs/pkg/cli"
	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

func main() {
	reg := cqrs.NewRegistry()
	// author_ref gets its rows through the default SQL, after a hook fills
	// a derived column (name_upper) the master does not send.
	upper := func(data *cqrs.Fields) {
		if name, ok := data.Get("name"); ok {
			if s, ok := name.(string); ok {
				data.Set("name_upper", strings.ToUpper(s))
			}
		}
	}
	must(reg.RegisterReplica(cqrs.ReplicaModel{
		CQRSID: "author",
		Table:  "author_ref",
		Hooks: cqrs.ReplicaHooks{
			Create: func(ctx context.Context, ac *cqrs.ApplyContext, data *cqrs.Fields) error {
				upper(data)
				return replica.DefaultCreate(ctx, ac, data)
			},
			Update: func(ctx context.Context, ac *cqrs.ApplyContext, existing, data *cqrs.Fields) error {
				upper(data)
				return replica.DefaultUpdate(ctx, ac, data)
			},
		},
	}))
	// audit has no table: every message of cqrs_id "audit" is handed over as it is.
	must(reg.RegisterReplica(cqrs.ReplicaModel{
		CQRSID: "audit",
		Raw: cqrs.RawHandlers{
			Save: func(ctx context.Context, ac *cqrs.ApplyContext) error {
				slog.InfoContext(ctx, "audit event", "pk", ac.Payload.InstancePK, "sync", ac.Sync)
				return nil
			},
			Delete: func(ctx context.Context, ac *cqrs.ApplyContext) error {
				slog.InfoContext(ctx, "audit event removed", "pk", ac.Payload.InstancePK)
				return nil
			},
		},
	}))
	os.Exit(cli.Consume(context.Background(), cli.Env{Registry: reg}, os.Args[1:]))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
