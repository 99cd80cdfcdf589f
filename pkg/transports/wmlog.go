package transports

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// NewWatermillLogger adapts logger for Watermill's components (router,
// publishers, subscribers). Unlike watermill.NewSlogLogger, it checks that a
// level is enabled before it converts Watermill's fields, so the router's
// per-message trace lines cost nothing when they are not logged. With
// infoAsDebug, Watermill's Info lines (connection chatter) are logged at
// Debug.
func NewWatermillLogger(logger *slog.Logger, infoAsDebug bool) watermill.LoggerAdapter {
	if logger == nil {
		logger = slog.Default()
	}
	return &wmLogger{log: logger, infoAsDebug: infoAsDebug}
}

type wmLogger struct {
	log         *slog.Logger
	infoAsDebug bool
}

func (l *wmLogger) emit(level slog.Level, msg string, fields watermill.LogFields, extra ...slog.Attr) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields)+len(extra))
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	l.log.LogAttrs(ctx, level, msg, append(attrs, extra...)...)
}

// Error logs at slog.LevelError.
func (l *wmLogger) Error(msg string, err error, fields watermill.LogFields) {
	l.emit(slog.LevelError, msg, fields, slog.Any("error", err))
}

// Info logs at slog.LevelInfo (Debug with infoAsDebug).
func (l *wmLogger) Info(msg string, fields watermill.LogFields) {
	level := slog.LevelInfo
	if l.infoAsDebug {
		level = slog.LevelDebug
	}
	l.emit(level, msg, fields)
}

// Debug logs at slog.LevelDebug.
func (l *wmLogger) Debug(msg string, fields watermill.LogFields) {
	l.emit(slog.LevelDebug, msg, fields)
}

// Trace logs at watermill.LevelTrace (below Debug).
func (l *wmLogger) Trace(msg string, fields watermill.LogFields) {
	l.emit(watermill.LevelTrace, msg, fields)
}

// With returns a logger adding fields to every line.
func (l *wmLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	args := make([]any, 0, len(fields))
	for k, v := range fields {
		args = append(args, slog.Any(k, v))
	}
	return &wmLogger{log: l.log.With(args...), infoAsDebug: l.infoAsDebug}
}
