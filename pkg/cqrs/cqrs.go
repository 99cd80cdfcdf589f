// Package cqrs is what services import to keep read copies of database rows
// in sync across services, the way django-cqrs does for Django — and on the
// same wire format, so Go and Django services share one RabbitMQ broker.
//
// A master service changes a row inside its own SQL transaction and calls
// the [Master] (Insert, Update, Save, Delete, Sync) with that *sqlx.Tx: the
// row's cqrs_revision is bumped and the message is written to an outbox table
// in the same transaction. A [Relay] publishes outbox rows through a
// Watermill publisher ([NewTransport]: memory, rabbitmq, kafka). Replica
// services run a [Consumer] whose router handlers apply each message with an
// [Engine], under django-cqrs's revision rules plus tombstones.
//
// The pieces live in subpackages (wire, registry, dialect, master, replica,
// consumer; outbox and transports beside this package); this package gathers
// the names a service needs and the configuration.
package cqrs

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// The model declarations (see package registry).
type (
	// Registry holds master and replica models by cqrs_id.
	Registry = registry.Registry
	// MasterModel declares a table whose changes are published.
	MasterModel = registry.MasterModel
	// ReplicaModel declares a table (or raw handlers) that applies messages.
	ReplicaModel = registry.ReplicaModel
	// Field is one field of a model.
	Field = registry.Field
	// Mapping maps a master key to a replica column.
	Mapping = registry.Mapping
	// ReplicaHooks override a replica's create, update and delete.
	ReplicaHooks = registry.ReplicaHooks
	// RawHandlers handle a replica model with no table.
	RawHandlers = registry.RawHandlers
	// ApplyContext is what replica hooks receive.
	ApplyContext = registry.ApplyContext
	// Event describes a change for correlation and meta functions.
	Event = registry.Event
)

// The wire format (see package wire).
type (
	// Payload is one django-cqrs message body.
	Payload = wire.Payload
	// Fields is an ordered JSON object.
	Fields = wire.Fields
	// SignalType is SAVE, DELETE or SYNC.
	SignalType = wire.SignalType
)

// The moving parts.
type (
	// Master writes changes and their messages inside the caller's transaction.
	Master = master.Master
	// Relay publishes outbox rows.
	Relay = outbox.Relay
	// Engine applies messages to a replica database.
	Engine = replica.Engine
	// Consumer runs the replica's Watermill router.
	Consumer = consumer.Consumer
	// Transport is a broker connection (publisher, subscriber, topology).
	Transport = transports.Transport
)

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return registry.New() }

// NewMaster returns a Master for db's registered master models (see master.New).
func NewMaster(ctx context.Context, db *sqlx.DB, reg *Registry, opts ...master.Option) (*Master, error) {
	return master.New(ctx, db, reg, opts...)
}

// Migrate creates or upgrades the tables gocqrs owns in db: the outbox (for
// masters) and the tombstones (for replicas). It is idempotent.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	d, err := dialect.Of(db)
	if err != nil {
		return err
	}
	if err := outbox.Migrate(ctx, db, d); err != nil {
		return err
	}
	return replica.Migrate(ctx, db, d, replica.Options{})
}

// NewRelay returns a relay publishing db's outbox through pub.
func NewRelay(db *sqlx.DB, pub message.Publisher, opts outbox.RelayOptions) (*Relay, error) {
	d, err := dialect.Of(db)
	if err != nil {
		return nil, err
	}
	return outbox.NewRelay(db, d, pub, opts)
}

// NewEngine returns the apply engine for db's registered replica models.
func NewEngine(ctx context.Context, db *sqlx.DB, reg *Registry, opts replica.Options) (*Engine, error) {
	d, err := dialect.Of(db)
	if err != nil {
		return nil, err
	}
	return replica.NewEngine(ctx, db, d, reg, opts)
}

// NewConsumer returns a consumer applying the transport's messages for the
// replica queue with eng.
func NewConsumer(tr Transport, reg *Registry, eng *Engine, opts consumer.Options) (*Consumer, error) {
	return consumer.New(tr, reg, eng, opts)
}

// NewTransport opens the transport the configuration names.
func NewTransport(ctx context.Context, cfg *Config, logger *slog.Logger) (Transport, error) {
	if logger == nil {
		logger = slog.Default()
	}
	tr, err := transports.New(ctx, cfg.TransportConfig(), logger)
	if err != nil {
		return nil, fmt.Errorf("cqrs: %w", err)
	}
	return tr, nil
}

// TransportConfig returns the transport part of the configuration. The
// RabbitMQ prefetch is replica.delay_queue_max_size + 1, as in django-cqrs
// (1001 by default).
func (c *Config) TransportConfig() transports.Config {
	tc := transports.Config{Transport: c.Transport, URL: c.URL, Exchange: c.Exchange, Memory: c.Memory}
	tc.TLS = c.TLS
	tc.Kafka = c.Kafka
	if c.Replica.DelayQueueMaxSize > 0 || c.Replica.BatchSize > 1 {
		// Room for the messages held for retry, those collected for a batch,
		// and the one in hand.
		delay := c.Replica.DelayQueueMaxSize
		if delay == 0 {
			delay = consumer.DefaultDelayQueueMaxSize
		}
		tc.Prefetch = delay + 1
		if c.Replica.BatchSize > 1 {
			inFlight := c.Replica.BatchMaxInFlight
			if inFlight == 0 {
				inFlight = consumer.DefaultBatchMaxInFlight(c.Replica.BatchSize)
			}
			tc.Prefetch += inFlight
		}
	}
	return tc.WithDefaults()
}
