package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentauth/agentauth/schemas"
)

func TestClassifyTable(t *testing.T) {
	for _, tc := range []struct {
		code   schemas.ErrorCode
		status int
		action Action
	}{
		{schemas.CodeEventTooLarge, 413, Term},
		{schemas.CodeInvalidEvent, 400, Term},
		{schemas.CodeUnsupportedVersion, 400, Term},
		{schemas.CodeInvalidHeaderEncoding, 400, Term},
		{schemas.CodeUnknownType, 400, Term},
		{schemas.CodeUnsupportedContent, 415, Term},
		{schemas.CodeSchemaViolation, 400, Term},
		{schemas.CodeSourceMismatch, 403, Term},
		{schemas.CodeUnauthenticated, 401, Term},
		{schemas.CodeForbidden, 403, Term},
		{schemas.CodeNotFound, 404, Term},
		{schemas.CodeConflict, 409, Ack},
		{schemas.CodeTimeout, 504, Nak},
		{schemas.CodeUnavailable, 503, Nak},
		{schemas.CodeInternal, 500, Nak},
		{schemas.CodeAuthorizationRequired, 403, Term},
		{schemas.CodeRetryLater, 503, Nak},
		{schemas.CodeDenied, 403, Term},
		{schemas.CodeAuthorizationPending, 400, Nak},
		{schemas.CodeSlowDown, 400, Nak},
		{schemas.CodeAccessDenied, 403, Term},
		{schemas.CodeExpiredToken, 400, Term},
		{schemas.CodeInvalidGrant, 400, Term},
		{schemas.CodeAlreadyDecided, 409, Term},
		{schemas.CodeInvalidBindingMessage, 400, Term},
		{schemas.CodeInvalidAuthorizationDetails, 400, Term},
	} {
		t.Run(string(tc.code), func(t *testing.T) {
			t.Run("default message", func(t *testing.T) {
				f := Classify(&Error{Code: tc.code})
				if f.Code != tc.code || f.Status != tc.status || f.Action != tc.action {
					t.Errorf("got %s/%d/%s, want %s/%d/%s", f.Code, f.Status, f.Action, tc.code, tc.status, tc.action)
				}
				if got, want := f.Message, table[tc.code].message; got != want || got == "" {
					t.Errorf("message: got %q, want the table's %q", got, want)
				}
				if f.Internal {
					t.Errorf("got Internal for an error with a code, want false")
				}
			})
			t.Run("own message", func(t *testing.T) {
				f := Classify(Errorf(tc.code, "do %s instead", "this"))
				if f.Code != tc.code || f.Status != tc.status || f.Action != tc.action {
					t.Errorf("got %s/%d/%s, want %s/%d/%s", f.Code, f.Status, f.Action, tc.code, tc.status, tc.action)
				}
				if got, want := f.Message, "do this instead"; got != want {
					t.Errorf("message: got %q, want %q", got, want)
				}
			})
		})
	}
	// The cases above must cover the table; a new code needs a row here.
	if got, want := len(table), 26; got != want {
		t.Errorf("the table has %d codes, the test %d: add the new code's row", got, want)
	}
}

func TestClassifyUncoded(t *testing.T) {
	const secret = "dial tcp 10.0.0.7:5432: password=hunter2 rejected"
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"plain", errors.New(secret)},
		{"wrapped", fmt.Errorf("vault get: %w", errors.New(secret))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Classify(tc.err)
			if f.Code != schemas.CodeInternal || f.Status != 500 || f.Action != Nak {
				t.Errorf("got %s/%d/%s, want internal/500/nak", f.Code, f.Status, f.Action)
			}
			if !f.Internal {
				t.Errorf("got Internal false, want true")
			}
			for _, part := range []string{secret, "hunter2", "10.0.0.7", "vault get"} {
				if strings.Contains(f.Message, part) {
					t.Errorf("message %q contains %q from the cause", f.Message, part)
				}
			}
			if got, want := f.Message, table[schemas.CodeInternal].message; got != want {
				t.Errorf("message: got %q, want %q", got, want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		code       schemas.ErrorCode
		message    string
		retryAfter time.Duration
	}{
		{
			name:    "deadline exceeded",
			err:     context.DeadlineExceeded,
			code:    schemas.CodeTimeout,
			message: table[schemas.CodeTimeout].message,
		},
		{
			name:    "wrapped deadline exceeded",
			err:     fmt.Errorf("fetch token: %w", context.DeadlineExceeded),
			code:    schemas.CodeTimeout,
			message: table[schemas.CodeTimeout].message,
		},
		{
			name:    "canceled",
			err:     fmt.Errorf("x: %w", context.Canceled),
			code:    schemas.CodeUnavailable,
			message: "the service is shutting down; try again",
		},
		{
			name:    "wrapped *Error",
			err:     fmt.Errorf("x: %w", Errorf(schemas.CodeNotFound, "no vault item %q", "gh")),
			code:    schemas.CodeNotFound,
			message: `no vault item "gh"`,
		},
		{
			name:    "doubly wrapped *Error",
			err:     fmt.Errorf("handler: %w", fmt.Errorf("x: %w", Errorf(schemas.CodeConflict, "already decided"))),
			code:    schemas.CodeConflict,
			message: "already decided",
		},
		{
			name:    "*Error hides its cause",
			err:     &Error{Code: schemas.CodeUnavailable, Message: "the vault is sealed", Err: errors.New("badger: db closed at /var/lib/x")},
			code:    schemas.CodeUnavailable,
			message: "the vault is sealed",
		},
		{
			name:       "retry after",
			err:        fmt.Errorf("x: %w", &Error{Code: schemas.CodeUnavailable, Message: "busy", RetryAfter: 3 * time.Second}),
			code:       schemas.CodeUnavailable,
			message:    "busy",
			retryAfter: 3 * time.Second,
		},
		{
			name:    "*DecodeError uses its Reason",
			err:     &DecodeError{Code: schemas.CodeInvalidHeaderEncoding, Reason: "header ce-id: bad percent-encoding"},
			code:    schemas.CodeInvalidHeaderEncoding,
			message: "header ce-id: bad percent-encoding",
		},
		{
			name:    "wrapped *DecodeError",
			err:     fmt.Errorf("decode: %w", &DecodeError{Code: schemas.CodeUnsupportedVersion, Reason: "use 1.0"}),
			code:    schemas.CodeUnsupportedVersion,
			message: "use 1.0",
		},
		{
			name:    "*Error before deadline",
			err:     Errorf(schemas.CodeTimeout, "the request did not complete within 20ms; try again"),
			code:    schemas.CodeTimeout,
			message: "the request did not complete within 20ms; try again",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Classify(tc.err)
			r := table[tc.code]
			if f.Code != tc.code {
				t.Errorf("code: got %s, want %s", f.Code, tc.code)
			}
			if f.Status != r.status || f.Action != r.action {
				t.Errorf("outcome: got %d/%s, want %d/%s", f.Status, f.Action, r.status, r.action)
			}
			if f.Message != tc.message {
				t.Errorf("message: got %q, want %q", f.Message, tc.message)
			}
			if f.RetryAfter != tc.retryAfter {
				t.Errorf("retry after: got %s, want %s", f.RetryAfter, tc.retryAfter)
			}
			if f.Internal {
				t.Errorf("got Internal, want false")
			}
		})
	}
}

func TestErrorWrapping(t *testing.T) {
	cause := errors.New("cause")
	err := fmt.Errorf("op: %w", &Error{Code: schemas.CodeForbidden, Message: "no", Err: cause})
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause): got false, want true", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != schemas.CodeForbidden {
		t.Errorf("errors.As: got %v, want the *Error with code forbidden", e)
	}
	if got, want := e.Error(), "forbidden: no: cause"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Ack: "ack", Nak: "nak", Term: "term"} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String(): got %q, want %q", a, got, want)
		}
	}
}

type detailed struct{ d *schemas.ErrorDetails }

func (e detailed) Error() string                       { return "connect first" }
func (e detailed) PublicMessage() string               { return "connect first" }
func (e detailed) ErrorCode() schemas.ErrorCode        { return schemas.CodeAuthorizationRequired }
func (e detailed) ErrorDetails() *schemas.ErrorDetails { return e.d }

// TestClassifyDetails: an error's next step reaches the failure (and so
// the error reply).
func TestClassifyDetails(t *testing.T) {
	d := &schemas.ErrorDetails{Connection: "demo", ConnectURL: "http://x/connect/1", Reason: "not_connected"}
	f := Classify(fmt.Errorf("wrapped: %w", detailed{d}))
	if f.Details != d || f.Code != schemas.CodeAuthorizationRequired || f.Message != "connect first" {
		t.Fatalf("got %+v", f)
	}
	if Classify(Errorf(schemas.CodeDenied, "no")).Details != nil {
		t.Fatal("details from nowhere")
	}
}
