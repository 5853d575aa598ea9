package bus_test

import (
	"strings"
	"testing"

	"github.com/agentauth/agentauth/bus"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"no credentials", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://u:s3cret@host:4222", "nats://***@host:4222"},
		{"token", "nats://TOKEN@host:4222", "nats://***@host:4222"},
		{"list", "nats://a:s3cret@n1:4222, tls://TOKEN@n2:4222,nats://n3:4222", "nats://***@n1:4222, tls://***@n2:4222,nats://n3:4222"},
		{"no scheme", "u:s3cret@host:4222", "***@host:4222"},
		{"password with @ and /", "nats://u:s3/c@ret@host:4222", "nats://***@host:4222"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bus.RedactURL(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStripUserinfo(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"no credentials", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://u:s3cret@host:4222", "nats://host:4222"},
		{"token", "nats://TOKEN@host:4222", "nats://host:4222"},
		{"list", "nats://a:s3cret@n1:4222,tls://TOKEN@n2:4222,nats://n3:4222", "nats://n1:4222,tls://n2:4222,nats://n3:4222"},
		{"password with @ and /", "nats://u:s3/c@ret@host:4222", "nats://host:4222"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bus.StripUserinfo(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestConnectErrorHidesCredentials: a URL nats.go cannot parse is quoted
// in its error; the credentials in it are not.
func TestConnectErrorHidesCredentials(t *testing.T) {
	_, err := bus.Connect(bus.ConnOptions{URL: "nats://u:s3cret@bad host:4222"})
	if err == nil {
		t.Fatal("connected to a malformed URL")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
}
