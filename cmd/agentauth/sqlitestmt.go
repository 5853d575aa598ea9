package main

import (
	"container/list"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
)

// OpenFGA's sqlite datastore builds each query with squirrel and runs it
// with database/sql's QueryContext, which modernc's driver answers by
// preparing the SQL anew: on the check path of a retrieval query about
// two thirds of the datastore's CPU went to SQLite's parser. The queries
// of a check have a handful of shapes, so each connection keeps its
// prepared statements, keyed by their SQL, and reuses them.

// stmtCacheSize bounds the statements kept per connection; the
// ListObjects queries have IN lists of varying length, so the shapes are
// not strictly finite.
const stmtCacheSize = 128

// openSQLiteWithStmtCache opens dsn with the registered "sqlite" driver,
// each connection keeping up to stmtCacheSize prepared queries.
func openSQLiteWithStmtCache(dsn string) (*sql.DB, error) {
	probe, err := sql.Open("sqlite", dsn) // connects nothing
	if err != nil {
		return nil, err
	}
	drv := probe.Driver()
	_ = probe.Close()
	return sql.OpenDB(stmtCacheConnector{dsn: dsn, drv: drv}), nil
}

type stmtCacheConnector struct {
	dsn string
	drv driver.Driver
}

func (c stmtCacheConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	for _, need := range []bool{
		implements[driver.QueryerContext](conn), implements[driver.ExecerContext](conn),
		implements[driver.ConnPrepareContext](conn), implements[driver.ConnBeginTx](conn),
	} {
		if !need {
			_ = conn.Close()
			return nil, fmt.Errorf("sqlite driver %T lacks a context method the statement cache needs", conn)
		}
	}
	return &stmtCacheConn{Conn: conn, byQuery: map[string]*list.Element{}, lru: list.New()}, nil
}

func (c stmtCacheConnector) Driver() driver.Driver { return c.drv }

func implements[T any](v any) bool { _, ok := v.(T); return ok }

// stmtCacheConn is used by one goroutine at a time (database/sql's
// contract for a driver connection), so it needs no lock.
type stmtCacheConn struct {
	driver.Conn
	byQuery map[string]*list.Element // of *cachedStmt
	lru     *list.List               // front: most recently used
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
	busy  bool // rows of it are open: another query with the same SQL (in a transaction) prepares its own
	stale bool // evicted while busy: close it when its rows close
}

func (c *stmtCacheConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil || cs.busy {
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	rows, err := cs.stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		// The statement may be left mid-step: never reuse it.
		c.evict(cs)
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: rows, conn: c, cs: cs}, nil
}

// stmt returns query's cached statement, preparing it on a miss; nil when
// it cannot be cached (it does not take the context arguments).
func (c *stmtCacheConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if e, ok := c.byQuery[query]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cachedStmt), nil
	}
	s, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if !implements[driver.StmtQueryContext](s) {
		_ = s.Close()
		return nil, nil
	}
	cs := &cachedStmt{query: query, stmt: s}
	c.byQuery[query] = c.lru.PushFront(cs)
	for c.lru.Len() > stmtCacheSize {
		c.evict(c.lru.Back().Value.(*cachedStmt))
	}
	return cs, nil
}

func (c *stmtCacheConn) evict(cs *cachedStmt) {
	if e, ok := c.byQuery[cs.query]; ok && e.Value == cs {
		delete(c.byQuery, cs.query)
		c.lru.Remove(e)
	}
	if cs.busy {
		cs.stale = true
		return
	}
	_ = cs.stmt.Close()
}

func (c *stmtCacheConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *stmtCacheConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *stmtCacheConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *stmtCacheConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *stmtCacheConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *stmtCacheConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *stmtCacheConn) Close() error {
	var errs []error
	for e := c.lru.Front(); e != nil; e = e.Next() {
		errs = append(errs, e.Value.(*cachedStmt).stmt.Close())
	}
	c.byQuery, c.lru = nil, list.New()
	return errors.Join(append(errs, c.Conn.Close())...)
}

// cachedRows gives its statement back when closed (modernc's rows reset a
// prepared statement instead of finalizing it).
type cachedRows struct {
	driver.Rows
	conn *stmtCacheConn
	cs   *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	if r.cs == nil {
		return err
	}
	cs := r.cs
	r.cs = nil
	cs.busy = false
	switch {
	case cs.stale:
		return errors.Join(err, cs.stmt.Close())
	case err != nil:
		r.conn.evict(cs)
	}
	return err
}

// The column type methods database/sql's ColumnTypes asks for, passed
// through (with database/sql's own answers when the driver has none).

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
