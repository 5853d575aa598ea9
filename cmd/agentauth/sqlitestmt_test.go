package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// stmtCacheDB opens a one-connection database with a table t(k, v) of n
// rows (k = i, v = "v<i>").
func stmtCacheDB(t *testing.T, n int) *sql.DB {
	t.Helper()
	db, err := openSQLiteWithStmtCache("file:" + filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("closing the database: %v", err)
		}
	})
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := db.Exec(`INSERT INTO t (k, v) VALUES (?, ?)`, i, fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// cached returns how many statements the pool's one connection keeps.
func cached(t *testing.T, db *sql.DB) int {
	t.Helper()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := -1
	if err := c.Raw(func(dc any) error {
		sc, ok := dc.(*stmtCacheConn)
		if !ok {
			return fmt.Errorf("the driver connection is a %T, not the statement cache", dc)
		}
		n = sc.lru.Len()
		if len(sc.byQuery) != n {
			return fmt.Errorf("%d statements by query, %d in the LRU", len(sc.byQuery), n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStmtCacheReusesStatements(t *testing.T) {
	db := stmtCacheDB(t, 100)
	for i := range 100 {
		var v string
		if err := db.QueryRow(`SELECT v FROM t WHERE k = ?`, i).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("v%d", i); v != want {
			t.Fatalf("row %d: got %q, want %q (a reused statement kept an old binding?)", i, v, want)
		}
	}
	// A reused statement is reset: a query that stops early does not
	// leave its rows behind for the next one.
	for i := range 3 {
		rows, err := db.Query(`SELECT k FROM t WHERE k >= ? ORDER BY k`, i*10)
		if err != nil {
			t.Fatal(err)
		}
		if !rows.Next() {
			t.Fatal("no row")
		}
		var k int
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		if k != i*10 {
			t.Fatalf("first row %d, want %d", k, i*10)
		}
		rows.Close()
	}
	if n := cached(t, db); n != 2 {
		t.Fatalf("%d statements cached, want the 2 query shapes (writes are not cached)", n)
	}
}

func TestStmtCacheSameQueryTwiceOpen(t *testing.T) {
	db := stmtCacheDB(t, 10)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	q := `SELECT v FROM t WHERE k >= ? ORDER BY k`
	a, err := tx.Query(q, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tx.Query(q, 7) // the cached statement is busy with a's rows
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for a.Next() && b.Next() {
		var va, vb string
		if err := a.Scan(&va); err != nil {
			t.Fatal(err)
		}
		if err := b.Scan(&vb); err != nil {
			t.Fatal(err)
		}
		got = append(got, va+"/"+vb)
	}
	if err := errorsOf(a, b); err != nil {
		t.Fatal(err)
	}
	if want := "v2/v7 v3/v8 v4/v9"; strings.Join(got, " ") != want {
		t.Fatalf("interleaved rows %q, want %q", got, want)
	}
}

func errorsOf(rs ...*sql.Rows) error {
	for _, r := range rs {
		if err := r.Err(); err != nil {
			return err
		}
		if err := r.Close(); err != nil {
			return err
		}
	}
	return nil
}

func TestStmtCacheBounded(t *testing.T) {
	db := stmtCacheDB(t, 1)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	// Rows of the first shape stay open while it is evicted.
	first, err := tx.Query(`SELECT v FROM t WHERE k = ? AND 0 = 0`, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= stmtCacheSize+10; i++ {
		var v string
		if err := tx.QueryRow(fmt.Sprintf(`SELECT v FROM t WHERE k = ? AND %d = %d`, i, i), 0).Scan(&v); err != nil {
			t.Fatal(err)
		}
	}
	if !first.Next() {
		t.Fatalf("the evicted statement's rows lost their row: %v", first.Err())
	}
	var v string
	if err := first.Scan(&v); err != nil || v != "v0" {
		t.Fatalf("evicted statement's row %q, %v", v, err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("closing the rows of an evicted statement: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := cached(t, db); n != stmtCacheSize {
		t.Fatalf("%d statements cached, want the bound %d", n, stmtCacheSize)
	}
	// The evicted shape prepares again.
	if err := db.QueryRow(`SELECT v FROM t WHERE k = ? AND 0 = 0`, 0).Scan(&v); err != nil || v != "v0" {
		t.Fatalf("re-prepared query: %q, %v", v, err)
	}
}

func TestStmtCacheFailedQueryIsNotReused(t *testing.T) {
	db := stmtCacheDB(t, 1)
	q := `SELECT abs(?) FROM t`
	var n int64
	// abs of the smallest int64 fails when stepped, after preparing.
	if err := db.QueryRow(q, int64(-1)<<63).Scan(&n); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("abs(MinInt64): %d, %v; want an integer overflow error", n, err)
	}
	if c := cached(t, db); c != 0 {
		t.Fatalf("%d statements cached after the failed one, want 0 (it is not kept)", c)
	}
	if err := db.QueryRow(q, -5).Scan(&n); err != nil || n != 5 {
		t.Fatalf("the same query after a failure: %d, %v", n, err)
	}
	if c := cached(t, db); c != 1 {
		t.Fatalf("%d statements cached, want 1", c)
	}
	// A query that does not parse is an error, and nothing is cached for it.
	if _, err := db.Query(`SELEKT 1`); err == nil {
		t.Fatal("a syntax error was accepted")
	}
	if c := cached(t, db); c != 1 {
		t.Fatalf("%d statements cached after a syntax error, want 1", c)
	}
}
