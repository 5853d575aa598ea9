package badgerlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLevels: warnings and errors reach slog, trimmed; info and debug do not.
func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Errorf("table %d is damaged\n", 7)
	l.Warningf("slow %s", "compaction")
	l.Infof("opened")
	l.Debugf("noise")
	out := buf.String()
	for _, want := range []string{`level=ERROR msg="table 7 is damaged"`, `level=WARN msg="slow compaction"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "opened") || strings.Contains(out, "noise") || strings.Count(out, "\n") != 2 {
		t.Errorf("log %q: want exactly the error and the warning", out)
	}
}
