package blocking

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	if err := Check(context.Background()); err != nil {
		t.Errorf("plain context: %v", err)
	}
	f := Forbid(context.Background())
	if err := Check(f); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("forbidding context: got %v, want ErrWouldBlock", err)
	}
	// Derived contexts keep the mark.
	d, cancel := context.WithTimeout(f, time.Second)
	defer cancel()
	if err := Check(d); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("derived context: got %v, want ErrWouldBlock", err)
	}
}
