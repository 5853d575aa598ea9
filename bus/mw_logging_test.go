package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

// logRecords decodes the JSON lines a slog.JSONHandler wrote.
func logRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogging(t *testing.T) {
	const secretData = `{"password":"hunter2"}`
	for _, tc := range []struct {
		name    string
		req     func(t *testing.T) *Request
		err     error
		level   string
		msg     string
		want    map[string]string // attributes that must be logged
		without []string          // attributes that must not be logged
	}{
		{
			name:    "success",
			level:   "DEBUG",
			msg:     "request",
			want:    map[string]string{"op": "sys-info", "agent": "a1"},
			without: []string{"code", "error", "reason"},
		},
		{
			name:    "rejected input",
			err:     Errorf(schemas.CodeSchemaViolation, "at /x: additional property"),
			level:   "INFO",
			msg:     "request rejected",
			want:    map[string]string{"op": "sys-info", "agent": "a1", "code": "schema_violation", "reason": "at /x: additional property", "request_id": "req-1"},
			without: []string{"error"},
		},
		{
			name: "undecodable message",
			req: func(t *testing.T) *Request {
				r := request(nil)
				r.decodeErr = &DecodeError{Code: schemas.CodeInvalidHeaderEncoding, Reason: "header ce-id: bad percent-encoding"}
				return r
			},
			level:   "INFO",
			msg:     "request rejected",
			want:    map[string]string{"code": "invalid_header_encoding", "reason": "header ce-id: bad percent-encoding"},
			without: []string{"error", "request_id"},
		},
		{
			name:    "internal failure",
			err:     errors.New("badger: disk full"),
			level:   "ERROR",
			msg:     "request failed",
			want:    map[string]string{"op": "sys-info", "agent": "a1", "code": "internal", "error": "badger: disk full", "request_id": "req-1"},
			without: []string{"reason"},
		},
		{
			name:  "timeout",
			err:   Errorf(schemas.CodeTimeout, "took too long"),
			level: "ERROR",
			msg:   "request failed",
			want:  map[string]string{"code": "timeout", "error": "timeout: took too long"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			var req *Request
			if tc.req != nil {
				req = tc.req(t)
			} else {
				e := sysInfoEvent(t)
				e.DataEncoded = []byte(secretData)
				req = request(e)
			}
			wantReply, _ := NewEvent(schemas.TypeSysInfoReply, struct{}{})
			reply, err := Logging(log)(HandlerFunc(func(_ context.Context, r *Request) (*event.Event, error) {
				if r.decodeErr != nil {
					return nil, r.decodeErr
				}
				if tc.err != nil {
					return nil, tc.err
				}
				return wantReply, nil
			})).ServeEvent(t.Context(), req)
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("got error %v, want the handler's %v", err, tc.err)
			}
			if tc.err == nil && tc.req == nil && (err != nil || reply != wantReply) {
				t.Errorf("got %v, %v; want the handler's reply", reply, err)
			}

			recs := logRecords(t, &buf)
			if len(recs) != 1 {
				t.Fatalf("got %d log records, want 1:\n%s", len(recs), buf.String())
			}
			rec := recs[0]
			if rec["level"] != tc.level || rec["msg"] != tc.msg {
				t.Errorf("got %v %q, want %s %q", rec["level"], rec["msg"], tc.level, tc.msg)
			}
			for k, want := range tc.want {
				if got, _ := rec[k].(string); got != want {
					t.Errorf("attribute %s: got %q, want %q", k, got, want)
				}
			}
			for _, k := range tc.without {
				if v, ok := rec[k]; ok {
					t.Errorf("attribute %s: got %v, want it absent", k, v)
				}
			}
			if strings.Contains(buf.String(), "hunter2") {
				t.Errorf("log contains the request data: %s", buf.String())
			}
		})
	}
}

func TestLoggingSuccessQuietAtInfo(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	next, _ := replyWith(t)
	if _, err := Logging(log)(next).ServeEvent(t.Context(), request(sysInfoEvent(t))); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("got log %q at info level, want successes logged at debug only", buf.String())
	}
}
