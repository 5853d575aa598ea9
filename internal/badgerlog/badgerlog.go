// Package badgerlog passes Badger's log to slog.
package badgerlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// New returns a Badger logger that passes warnings and errors to l and
// drops the rest.
func New(l *slog.Logger) badger.Logger { return logger{l} }

type logger struct{ l *slog.Logger }

func (b logger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b logger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (logger) Infof(string, ...any)          {}
func (logger) Debugf(string, ...any)         {}

func (b logger) log(level slog.Level, f string, a []any) {
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(f, a...)))
}
