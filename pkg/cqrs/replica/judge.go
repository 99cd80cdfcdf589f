package replica

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// logEntry is one log record kept back until the work it describes is done.
type logEntry struct {
	l     *slog.Logger
	level slog.Level
	msg   string
	args  []any
}

// logSink writes log records at once (buf nil, one-at-a-time apply) or keeps
// them in buf until a batch's writes succeeded, so that a batch split after
// a failure does not log its decisions twice. The attributes of a SAVE or
// SYNC (saveLogger) go before each record's own, as slog.Logger.With would
// put them, but are only built when something is logged.
type logSink struct {
	l   *slog.Logger
	buf *[]logEntry
	sv  struct {
		set   bool
		id    string
		pk    any
		rev   int64
		queue string
	}
}

func (s logSink) log(level slog.Level, msg string, args ...any) {
	if s.sv.set {
		args = append([]any{"cqrs_id", s.sv.id, "pk", pkString(s.sv.pk), "cqrs_revision", s.sv.rev, "queue", s.sv.queue}, args...)
	}
	if s.buf == nil {
		s.l.Log(context.Background(), level, msg, args...)
		return
	}
	*s.buf = append(*s.buf, logEntry{l: s.l, level: level, msg: msg, args: args})
}

func (s logSink) info(msg string, args ...any) { s.log(slog.LevelInfo, msg, args...) }
func (s logSink) warn(msg string, args ...any) { s.log(slog.LevelWarn, msg, args...) }

// flushLogs writes kept-back records.
func flushLogs(entries []logEntry) {
	for _, e := range entries {
		e.l.Log(context.Background(), e.level, e.msg, e.args...)
	}
}

// saveLogger is the logger of one SAVE or SYNC, as Apply names it.
func (e *Engine) saveLogger(s logSink, id string, pk any, rev int64) logSink {
	s.sv.set, s.sv.id, s.sv.pk, s.sv.rev, s.sv.queue = true, id, pk, rev, e.opts.Queue
	return s
}

// indirect reports whether a broadcast SYNC must be ignored, logging it.
func (e *Engine) indirect(s logSink, cm *model, dl Delivery) bool {
	if dl.Payload.SignalType != wire.SignalSync || !cm.m.OnlyDirectSyncs || dl.Direct {
		return false
	}
	s.info("CQRS broadcast SYNC ignored: model takes only direct syncs",
		"cqrs_id", cm.m.CQRSID, "pk", pkString(dl.Payload.InstancePK), "queue", e.opts.Queue)
	return true
}

// tombstoneSkips is the tombstone rule: a SAVE or SYNC for a pk without a
// row is skipped when it is not newer than the DELETE that left the
// tombstone, by revision and by cqrs_updated.
func tombstoneSkips(log logSink, tomb *tombstone, rev int64, upd time.Time) bool {
	if tomb == nil || rev > tomb.revision || upd.After(tomb.updated) {
		return false
	}
	log.info("CQRS skipped: the row was deleted by a later DELETE (tombstone)",
		"tombstone_revision", tomb.revision, "tombstone_updated", tomb.updated)
	return true
}

// judge applies the revision rules to a SAVE or SYNC of revision rev for an
// existing row stored at revision stored. It fills in StoredRevision, Gap,
// Downgrade and, when the message is skipped, Outcome; apply reports whether
// the row is to be updated.
func judge(log logSink, id string, pk any, rev, stored int64, isSync bool) (res Result, apply bool) {
	res = Result{StoredRevision: stored}
	switch {
	case isSync:
		if stored > rev {
			log.warn(fmt.Sprintf("CQRS revision downgrade on sync: pk = %s, cqrs_revision = new %d / existing %d (%s).", pkString(pk), rev, stored, id))
			res.Downgrade = true
		}
	case stored > rev:
		log.warn(fmt.Sprintf("Wrong CQRS sync order: pk = %s, cqrs_revision = new %d / existing %d (%s).", pkString(pk), rev, stored, id))
		res.Outcome = OutcomeSkippedStale
		return res, false
	case stored == rev:
		log.warn(fmt.Sprintf("Received duplicate CQRS data: pk = %s, cqrs_revision = %d (%s).", pkString(pk), rev, id))
		if rev == 0 {
			log.warn(fmt.Sprintf("CQRS potential creation race condition: pk = %s (%s).", pkString(pk), id))
		}
		res.Outcome = OutcomeSkippedDuplicate
		return res, false
	case rev > stored+1:
		res.Gap = rev - stored - 1
		log.warn(fmt.Sprintf("Lost or filtered out %d CQRS packages: pk = %s, cqrs_revision = %d (%s)", res.Gap, pkString(pk), rev, id))
	}
	return res, true
}
