package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
)

type fastDecoder interface{ DecodeJSON([]byte) error }

// decoders are the types with a fast decoder, each with a fresh value.
var decoders = []func() fastDecoder{
	func() fastDecoder { return new(WhoAmIRequest) },
	func() fastDecoder { return new(ExchangeRequest) },
	func() fastDecoder { return new(VaultTokenRequest) },
	func() fastDecoder { return new(VaultToken) },
	func() fastDecoder { return new(SysInfo) },
}

// checkFast: whenever a fast decoder accepts input, encoding/json accepts
// it too and decodes the same value.
func checkFast(t *testing.T, data []byte) (accepted int) {
	for _, mk := range decoders {
		fast, slow := mk(), mk()
		if fast.DecodeJSON(data) != nil {
			continue
		}
		accepted++
		if err := json.Unmarshal(data, slow); err != nil {
			t.Fatalf("%T: fast decoder accepted %q, encoding/json refuses it: %v", fast, data, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%T on %q: fast %+v, encoding/json %+v", fast, data, fast, slow)
		}
	}
	return accepted
}

var decodeSeeds = []string{
	`{"user_token":"eyJ.a.b"}`,
	` { "user_token" : "t" , "connection":"google","scopes":["a","b"] } `,
	`{"user_token":"t","audience":"https://api","scopes":[],"ttl_seconds":60}`,
	`{"user_token":"t","ttl_seconds":060}`,
	`{"user_token":"t","ttl_seconds":-0}`,
	`{"user_token":"t","ttl_seconds":1.5}`,
	`{"user_token":"t\u0041"}`,
	`{"User_Token":"t"}`,
	`{"user_token":"t","user_token":"u"}`,
	`{"user_token":null}`,
	`{"user_token":"t"} x`,
	`{"scopes":["a",]}`,
	"{\"user_token\":\"\xff\"}",
	`{"connection":"c","scopes":["é"]}`,
	`{"connection":"demo","token_type":"Bearer","scopes":["openid"],"expires_at":"2026-11-27T12:00:00.123456789Z","fingerprint":"sha256:00","sealed_token":{"alg":"x","sender":"X1","recipient":"X2","ciphertext":"AAEC+/8="}}`,
	`{"connection":"demo","expires_at":"2026-11-27T12:00:00+01:00","sealed_token":{"ciphertext":"AAE"}}`,
	`{"sealed_token":{}, "expires_at":"2026-13-01T00:00:00Z"}`,
	`{"sealed_token":{"ciphertext":null}}`,
	`{"expires_at":"2026-11-27T12:00:00,5Z"}`,
	`{"expires_at":"2026-11-27T24:00:00Z"}`,
	`{"expires_at":"2026-11-27T12:00:00+01:60"}`,
	`{"expires_at":"2026-11-27T12:00:00.Z"}`,
	`{"service":"agentauth","version":"dev","instance":"i1","agent":"a","server_time":"2026-11-27T12:00:00.5Z","capabilities":{"sys":true,"user":false,"vault":true,"approval":true,"retrieval":false}}`,
	`{"capabilities":{"sys":true},"capabilities":{"user":true}}`,
	`{"capabilities":{"sys":tru}}`,
	`{"capabilities":{"sys":null}}`,
	`{"capabilities":{"sys":truex}}`,
	`{"capabilities":{"Sys":true}}`,
	`{"capabilities":[]}`,
}

func TestFastDecodeAgreesWithEncodingJSON(t *testing.T) {
	accepted := 0
	for _, s := range decodeSeeds {
		accepted += checkFast(t, []byte(s))
	}
	if accepted == 0 {
		t.Fatal("no seed took the fast path")
	}
	var w WhoAmIRequest
	if err := w.DecodeJSON([]byte(`{"user_token":"eyJ.a.b"}`)); err != nil || w.UserToken != "eyJ.a.b" {
		t.Fatalf("fast path not taken: %+v %v", w, err)
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkFast(t, data) })
}

// TestPlainString: the word-at-a-time check agrees with the byte-at-a-time
// definition, around every boundary it tests (and their high-bit twins).
func TestPlainString(t *testing.T) {
	edges := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '\\' - 1, '\\', '\\' + 1, 0x7f, 0x80, 0x9c, 0x9f, 0xa0, 0xdc, 0xff, 'a'}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		v := make([]byte, rng.IntN(40))
		for i := range v {
			if rng.IntN(4) == 0 {
				v[i] = edges[rng.IntN(len(edges))]
			} else {
				v[i] = 'a' + byte(rng.IntN(26))
			}
		}
		want := true
		for _, c := range v {
			if c < 0x20 || c == '\\' {
				want = false
			}
		}
		if got := plainString(v); got != want {
			t.Fatalf("plainString(%q) = %v, want %v", v, got, want)
		}
	}
}
