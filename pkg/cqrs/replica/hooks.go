package replica

import (
	"context"
	"fmt"

	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// DefaultCreate is the engine's default create step (an INSERT of the
// columns present in data) for hooks that wrap it, as a django-cqrs
// cqrs_create override calls super(). ac and data are what the hook got.
func DefaultCreate(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
	cm, err := hookModel(ctx, ac)
	if err != nil {
		return err
	}
	if err := cm.insert(ctx, ac.Tx, data); err != nil {
		return fmt.Errorf("default create: %w", err)
	}
	return nil
}

// DefaultUpdate is the engine's default update step (an UPDATE of the
// columns present in data, by the pk in data) for hooks that wrap it.
func DefaultUpdate(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
	cm, err := hookModel(ctx, ac)
	if err != nil {
		return err
	}
	raw, ok := data.Get(cm.pk.name)
	if !ok {
		return fmt.Errorf("default update: %w in data (%s): no %q", ErrNoPK, cm.m.CQRSID, cm.pk.name)
	}
	pk, err := toSQL(cm.d, cm.pk, raw)
	if err != nil {
		return fmt.Errorf("default update: %w", err)
	}
	if err := cm.update(ctx, ac.Tx, pk, data); err != nil {
		return fmt.Errorf("default update: %w", err)
	}
	return nil
}

// DefaultDelete is the engine's default delete step for hooks that wrap it;
// pk is what the delete hook got.
func DefaultDelete(ctx context.Context, ac *registry.ApplyContext, pk any) error {
	cm, err := hookModel(ctx, ac)
	if err != nil {
		return err
	}
	if _, err := ac.Tx.ExecContext(ctx, cm.del, pk); err != nil {
		return fmt.Errorf("default delete: delete from %s: %w", cm.m.Table, err)
	}
	return nil
}

func hookModel(ctx context.Context, ac *registry.ApplyContext) (*model, error) {
	cm, err := modelFor(ctx, ac)
	if err != nil {
		return nil, err
	}
	if cm.table == "" {
		return nil, fmt.Errorf("replica: model %q has no table: no default step", cm.m.CQRSID)
	}
	if ac.Tx == nil {
		return nil, fmt.Errorf("replica: model %q: no transaction in ApplyContext", cm.m.CQRSID)
	}
	return cm, nil
}
