package approval_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/schemas"
)

// wantCode fails unless err is an *approval.Error with code.
func wantCode(tb testing.TB, err error, code schemas.ErrorCode) *approval.Error {
	tb.Helper()
	var e *approval.Error
	if !errors.As(err, &e) {
		tb.Fatalf("got error %v, want an *approval.Error with code %s", err, code)
	}
	if e.Code != code {
		tb.Fatalf("got code %s (%s), want %s", e.Code, e.Msg, code)
	}
	return e
}

func TestApprovalBindingMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		ok   bool
	}{
		{"plain", "Buy 1 book for 12.50 EUR at Shop", true},
		{"64 ascii", strings.Repeat("a", 64), true},
		{"64 multibyte", strings.Repeat("é", 32) + strings.Repeat("日", 32), true},
		{"accents and emoji", "Café für 3 € 🍰", true},
		{"no-break space", "12\u00a0EUR", true},
		{"65 characters", strings.Repeat("a", 65), false},
		{"65 multibyte", strings.Repeat("日", 65), false},
		{"empty", "", false},
		{"blank", "   ", false},
		{"newline", "Buy\nnow", false},
		{"carriage return", "Buy\rnow", false},
		{"tab", "Buy\tnow", false},
		{"nul", "Buy\x00now", false},
		{"escape", "Buy \x1b[31mnow", false},
		{"del", "Buy\x7fnow", false},
		{"c1 control", "Buy\u0085now", false},
		{"right-to-left override U+202E", "Pay \u202eRUE 01", false},
		{"left-to-right embedding U+202A", "Pay \u202a10", false},
		{"pop directional U+202C", "Pay \u202c10", false},
		{"isolate U+2066", "Pay \u206610", false},
		{"pop isolate U+2069", "Pay \u206910", false},
		{"left-to-right mark U+200E", "Pay\u200e10", false},
		{"right-to-left mark U+200F", "Pay\u200f10", false},
		{"arabic letter mark U+061C", "Pay\u061c10", false},
		{"zero-width space U+200B", "Pay\u200b10", false},
		{"zero-width non-joiner U+200C", "Pay\u200c10", false},
		{"zero-width joiner U+200D", "Pay\u200d10", false},
		{"word joiner U+2060", "Pay\u206010", false},
		{"byte order mark U+FEFF", "\ufeffPay 10", false},
		{"soft hyphen U+00AD (format)", "Pay\u00ad10", false},
		{"line separator U+2028", "Pay\u202810", false},
		{"paragraph separator U+2029", "Pay\u202910", false},
		{"private use U+E000", "Pay\ue00010", false},
		{"invalid utf-8", "Pay \xff10", false},
		{"hangul filler U+3164 alone", "\u3164", false},
		{"hangul filler U+3164 among spaces", " \u3164 ", false},
		{"hangul choseong filler U+115F", "\u115fx", false},
		{"hangul jungseong filler U+1160", "Pay\u116010", false},
		{"halfwidth hangul filler U+FFA0", "Pay\uffa010", false},
		{"combining grapheme joiner U+034F", "Pay\u034f10", false},
		{"variation selector 16 U+FE0F", "Pay\ufe0f10", false},
		{"emoji with variation selector", "I \u2764\ufe0f it", false},
		{"variation selector 17 U+E0100", "\U000E0100x", false},
		{"mongolian free variation selector U+180B", "Pay\u180b10", false},
		{"khmer inherent vowel U+17B4", "Pay\u17b410", false},
		{"cjk", "購入 1 冊 ¥3,200 — 書店", true},
		{"hangul", "책 1권 구매 32,000원", true},
		{"combining accent", "Cafe\u0301 12 EUR", true},
		{"emoji without variation selector", "Pay 10 EUR 💶 🛒", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := approval.ValidBindingMessage(tt.msg)
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			wantCode(t, err, schemas.CodeInvalidBindingMessage)
		})
	}
}

func mustDefaultTypes(tb testing.TB) *approval.TypeRegistry {
	tb.Helper()
	r, err := approval.NewTypeRegistry(approval.DefaultTypes())
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func raw(ss ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(ss))
	for i, s := range ss {
		out[i] = json.RawMessage(s)
	}
	return out
}

func TestApprovalTypeRegistryCheck(t *testing.T) {
	reg := mustDefaultTypes(t)
	tests := []struct {
		name    string
		details []json.RawMessage
		want    []string // compacted, when accepted
		errHas  string   // in the message, when refused
	}{
		{name: "purchase", details: raw(`{ "type": "purchase", "item": "book", "amount": 12.5, "currency": "EUR", "merchant": "Shop" }`),
			want: []string{`{"amount":12.5,"currency":"EUR","item":"book","merchant":"Shop","type":"purchase"}`}},
		{name: "purchase without merchant, zero amount", details: raw(`{"type":"purchase","item":"gift","amount":0,"currency":"USD"}`),
			want: []string{`{"amount":0,"currency":"USD","item":"gift","type":"purchase"}`}},
		{name: "two details", details: raw(`{"type":"purchase","item":"a","amount":1,"currency":"EUR"}`, `{"type":"purchase","item":"b","amount":2,"currency":"EUR"}`),
			want: []string{`{"amount":1,"currency":"EUR","item":"a","type":"purchase"}`, `{"amount":2,"currency":"EUR","item":"b","type":"purchase"}`}},
		{name: "numbers as written, strings re-escaped", details: raw(`{"type":"purchase","item":"a<b>&\u00e9","amount":32.50,"currency":"EUR"}`),
			want: []string{`{"amount":32.50,"currency":"EUR","item":"a\u003cb\u003e\u0026é","type":"purchase"}`}},
		{name: "unknown type", details: raw(`{"type":"wire_transfer","amount":1}`), errHas: `unknown type "wire_transfer" (registered types: purchase)`},
		{name: "lower-case currency", details: raw(`{"type":"purchase","item":"book","amount":1,"currency":"eur"}`), errHas: "/currency"},
		{name: "negative amount", details: raw(`{"type":"purchase","item":"book","amount":-1,"currency":"EUR"}`), errHas: "/amount"},
		{name: "amount as string", details: raw(`{"type":"purchase","item":"book","amount":"1","currency":"EUR"}`), errHas: "/amount"},
		{name: "missing item", details: raw(`{"type":"purchase","amount":1,"currency":"EUR"}`), errHas: "item"},
		{name: "extra field", details: raw(`{"type":"purchase","item":"book","amount":1,"currency":"EUR","ship_to":"elsewhere"}`), errHas: "ship_to"},
		{name: "second detail bad", details: raw(`{"type":"purchase","item":"a","amount":1,"currency":"EUR"}`, `{"type":"nope"}`), errHas: "authorization_details[1]"},
		{name: "empty list", details: []json.RawMessage{}, errHas: "empty"},
		{name: "array", details: raw(`[{"type":"purchase"}]`), errHas: "JSON object"},
		{name: "string", details: raw(`"purchase"`), errHas: "JSON object"},
		{name: "null", details: raw(`null`), errHas: "JSON object"},
		{name: "no type", details: raw(`{"item":"book"}`), errHas: `"type" string`},
		{name: "type not a string", details: raw(`{"type":7}`), errHas: `"type" string`},
		{name: "empty type", details: raw(`{"type":""}`), errHas: `"type" string`},
		{name: "duplicate member", details: raw(`{"type":"purchase","item":"book","amount":1,"amount":1000,"currency":"EUR"}`), errHas: `"amount" appears twice`},
		{name: "duplicate type", details: raw(`{"type":"nope","type":"purchase","item":"book","amount":1,"currency":"EUR"}`), errHas: `"type" appears twice`},
		{name: "duplicate nested", details: raw(`{"type":"purchase","item":"book","amount":1,"currency":"EUR","x":{"a":1,"a":2}}`), errHas: `"a" appears twice`},
		{name: "two values", details: raw(`{"type":"purchase"}{}`), errHas: "exactly one"},
		{name: "invalid json", details: raw(`{"type":"purchase",}`), errHas: "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := reg.Check(tt.details)
			if tt.errHas != "" {
				e := wantCode(t, err, schemas.CodeInvalidAuthorizationDetails)
				if !strings.Contains(e.Msg, tt.errHas) {
					t.Fatalf("got message %q, want it to contain %q", e.Msg, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d details, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if string(got[i]) != tt.want[i] {
					t.Errorf("detail %d: got %s, want %s", i, got[i], tt.want[i])
				}
			}
		})
	}
	if got, err := reg.Check(nil); got != nil || err != nil {
		t.Errorf("Check(nil): got %v, %v; want nil, nil", got, err)
	}
	var none *approval.TypeRegistry
	_, err := none.Check(raw(`{"type":"purchase","item":"book","amount":1,"currency":"EUR"}`))
	if e := wantCode(t, err, schemas.CodeInvalidAuthorizationDetails); !strings.Contains(e.Msg, "registered types: none") {
		t.Errorf("nil registry: got %q, want it to say no type is registered", e.Msg)
	}
}

func TestApprovalNewTypeRegistry(t *testing.T) {
	reg, err := approval.NewTypeRegistry(map[string][]byte{
		"purchase": approval.DefaultTypes()["purchase"],
		"document": []byte(`{"type":"object","required":["type","name"],"properties":{"name":{"type":"string"}}}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(reg.Types()), "[document purchase]"; got != want {
		t.Errorf("Types: got %s, want %s", got, want)
	}
	if _, err := reg.Check(raw(`{"type":"document","name":"contract.pdf"}`)); err != nil {
		t.Errorf("registered type: %v", err)
	}
	for name, types := range map[string]map[string][]byte{
		"not JSON":      {"x": []byte(`{`)},
		"not a schema":  {"x": []byte(`{"type":12}`)},
		"empty name":    {"": []byte(`{}`)},
		"padded name":   {" x": []byte(`{}`)},
		"bad reference": {"x": []byte(`{"$ref":"#/nowhere"}`)},
	} {
		if _, err := approval.NewTypeRegistry(types); err == nil {
			t.Errorf("%s: got nil error, want one", name)
		}
	}
}

func TestApprovalUserRefKey(t *testing.T) {
	u := approval.UserRef{Issuer: "https://idp.example", Subject: "alice"}
	sum := sha256.Sum256([]byte("https://idp.example\x00alice"))
	if got, want := u.Key(), base64.RawURLEncoding.EncodeToString(sum[:]); got != want {
		t.Errorf("Key: got %s, want %s", got, want)
	}
	if len(u.Key()) != 43 {
		t.Errorf("Key length: got %d, want 43", len(u.Key()))
	}
	a := approval.UserRef{Issuer: "ab", Subject: "c"}
	b := approval.UserRef{Issuer: "a", Subject: "bc"}
	if a.Key() == b.Key() {
		t.Error("issuer and subject are not separated in the key")
	}
}

func TestApprovalError(t *testing.T) {
	cause := errors.New("nats: timeout")
	e := &approval.Error{Code: schemas.CodeSlowDown, Msg: "polling too fast", RetryAfter: 10 * time.Second, Err: cause}
	if e.ErrorCode() != schemas.CodeSlowDown || e.PublicMessage() != "polling too fast" || e.RetryAfterHint() != 10*time.Second {
		t.Errorf("accessors: got %s, %q, %v", e.ErrorCode(), e.PublicMessage(), e.RetryAfterHint())
	}
	if !errors.Is(e, cause) {
		t.Error("errors.Is does not reach the cause")
	}
	if got := approval.CodeOf(fmt.Errorf("wrapped: %w", e)); got != schemas.CodeSlowDown {
		t.Errorf("CodeOf: got %q, want %q", got, schemas.CodeSlowDown)
	}
	if got := approval.CodeOf(cause); got != "" {
		t.Errorf("CodeOf(other): got %q, want empty", got)
	}
}
