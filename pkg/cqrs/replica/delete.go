package replica

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// deleteKey is the instance_data key of a DELETE's pk: always "id" on the
// wire (django-cqrs's _map_delete_data), whatever the pk is called.
const deleteKey = "id"

func (e *Engine) applyDelete(ctx context.Context, tx *sqlx.Tx, cm *model, dl Delivery) (Result, error) {
	res := Result{StoredRevision: -1}
	p := dl.Payload
	id := cm.m.CQRSID
	rawPK, ok := p.InstanceData.Get(deleteKey)
	if !ok {
		return res, fmt.Errorf("replica: %w in data %s: DELETE without %q", ErrNoPK, where(id, p.InstancePK), deleteKey)
	}
	rev, upd, err := syncFields(id, rawPK, p.InstanceData)
	if err != nil {
		return res, err
	}
	ac := e.applyContext(tx, cm, p)
	pk, err := toSQL(e.d, cm.pk, rawPK)
	if err != nil {
		return res, fmt.Errorf("replica: %s: %w", where(id, rawPK), err)
	}
	at := where(id, pk)
	stored, found, err := cm.readRevision(ctx, tx, pk)
	if err != nil {
		return res, fmt.Errorf("replica: %s: read %s: %w", at, cm.m.Table, err)
	}
	if found {
		res.StoredRevision = stored
	}
	if cm.m.Hooks.Delete != nil {
		if err := cm.m.Hooks.Delete(ctx, ac, pk); err != nil {
			return res, fmt.Errorf("replica: %s: delete hook: %w", at, err)
		}
	} else if found {
		if _, err := tx.ExecContext(ctx, cm.del, pk); err != nil {
			return res, fmt.Errorf("replica: %s: delete from %s: %w", at, cm.m.Table, err)
		}
	}
	if e.tomb != nil {
		trev := rev
		if found && stored > trev {
			trev = stored
		}
		if err := e.tomb.put(ctx, tx, id, pkKey(pk), trev, upd); err != nil {
			return res, fmt.Errorf("replica: %s: %w", at, err)
		}
	}
	if found {
		res.Outcome = OutcomeDeleted
	} else {
		res.Outcome = OutcomeDeleteMissing
	}
	return res, nil
}

// readRevision reads the stored revision of pk, locking the row where the
// dialect can (it is about to be deleted).
func (cm *model) readRevision(ctx context.Context, tx *sqlx.Tx, pk any) (int64, bool, error) {
	var v any
	err := tx.QueryRowxContext(ctx, cm.selRev, pk).Scan(&v)
	if err != nil {
		if isNoRows(err) {
			return 0, false, nil
		}
		return 0, false, err
	}
	rev, ok := asInt64(v)
	if !ok {
		return 0, false, fmt.Errorf("column %q holds %v, not an integer revision", cm.rev.name, v)
	}
	return rev, true, nil
}
