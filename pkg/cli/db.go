package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// openDB opens and pings the configured database.
//
// MySQL DSNs get parseTime=true and loc=UTC unless they say otherwise; a
// SQLite DSN that is a plain path gets WAL, a busy timeout and immediate
// write transactions.
func openDB(ctx context.Context, cfg cqrs.DatabaseConfig) (*sqlx.DB, dialect.Dialect, error) {
	if cfg.Driver == "" || cfg.DSN == "" {
		return nil, dialect.Dialect{}, fmt.Errorf("config: database.driver and database.dsn are required for this command")
	}
	d, err := dialect.For(cfg.Driver)
	if err != nil {
		return nil, dialect.Dialect{}, fmt.Errorf("config: database.driver: %w", err)
	}
	driver, dsn := "", cfg.DSN
	switch d.Name() {
	case dialect.Postgres:
		driver = "pgx"
	case dialect.MySQL:
		driver = "mysql"
		mc, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, d, fmt.Errorf("config: database.dsn: %w", err)
		}
		if !strings.Contains(dsn, "parseTime=") {
			mc.ParseTime = true
		}
		if !strings.Contains(dsn, "loc=") {
			mc.Loc = time.UTC
		}
		dsn = mc.FormatDSN()
	case dialect.SQLite:
		driver = "sqlite"
		if !strings.HasPrefix(dsn, "file:") && !strings.Contains(dsn, "?") {
			dsn = "file:" + dsn + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
		}
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, d, fmt.Errorf("open %s database: %w", d, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, d, fmt.Errorf("connect to %s database: %s", d, redactErr(err, cfg.DSN))
	}
	return db, d, nil
}

// redactErr returns err's text with any password of dsn removed.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if pw := dsnPassword(dsn); pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

// dsnPassword finds the password in a URL DSN (scheme://user:pw@host) or a
// go-sql-driver DSN (user:pw@tcp(host)/db).
func dsnPassword(dsn string) string {
	s := dsn
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return ""
	}
	userinfo := s[:at]
	if c := strings.IndexByte(userinfo, ':'); c >= 0 {
		return userinfo[c+1:]
	}
	return ""
}
