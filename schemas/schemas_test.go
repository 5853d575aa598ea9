package schemas

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidAgentID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"demo", true}, {"agent-1", true}, {"a_b", true}, {"0x", true},
		{"", false}, {"Demo", false}, {"a.b", false}, {"a*", false}, {"a>", false}, {"-a", false},
		{strings.Repeat("a", 64), false}, {"audit", false}, {"events", false}, {"notify", false}, {"admin", false},
	} {
		err := ValidAgentID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("ValidAgentID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got, want := Subject("a1", OpSysInfo), "agentauth.a1.sys.info"; got != want {
		t.Errorf("Subject: got %s, want %s", got, want)
	}
	if got, want := OpSysInfo.SubjectPattern(), "agentauth.*.sys.info"; got != want {
		t.Errorf("SubjectPattern: got %s, want %s", got, want)
	}
	// An audit subject must never match a request subject pattern.
	audit := AuditSubject("sys", "info", "ok")
	if n := strings.Count(audit, "."); n != 4 {
		t.Errorf("audit subject %s has %d dots, want 4 (five tokens)", audit, n)
	}
	for _, op := range Operations {
		if strings.Count(op.SubjectPattern(), ".") == strings.Count(audit, ".") {
			t.Errorf("op %s has as many tokens as audit subjects", op.SubjectPattern())
		}
	}
}

func TestValidator(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Types()) < 4 {
		t.Fatalf("only %d schemas compiled", len(v.Types()))
	}
	for _, tc := range []struct {
		name, typ, data string
		wantErr         string
	}{
		{"empty request", TypeSysInfoRequest, ``, ""},
		{"empty object", TypeSysInfoRequest, `{}`, ""},
		{"spaced empty object", TypeSysInfoRequest, " { } ", ""},
		{"extra property", TypeSysInfoRequest, `{"x":1}`, "additional properties"},
		{"not JSON", TypeSysInfoRequest, `{`, "not valid JSON"},
		{"array", TypeSysInfoRequest, `[]`, "want object"},
		{"reply ok", TypeSysInfoReply, `{"service":"agentauth","version":"1","instance":"i","agent":"a","server_time":"2026-01-02T15:04:05Z","capabilities":{"sys":true,"user":false,"vault":false,"approval":false,"retrieval":false}}`, ""},
		{"reply bad time", TypeSysInfoReply, `{"service":"agentauth","version":"1","instance":"i","agent":"a","server_time":"noon","capabilities":{}}`, "server_time"},
		{"reply missing field", TypeSysInfoReply, `{"service":"agentauth"}`, "missing"},
		{"error ok", ErrorType, `{"code":"invalid_event","message":"m"}`, ""},
		{"error empty message", ErrorType, `{"code":"invalid_event","message":""}`, "message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Validate(tc.typ, []byte(tc.data))
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("got %v, want valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
	if err := v.Validate("dev.agentauth.nope", []byte(`{}`)); !errors.Is(err, ErrNoSchema) {
		t.Errorf("unknown type: got %v, want ErrNoSchema", err)
	}
}

func TestEveryOperationHasSchemas(t *testing.T) {
	for _, op := range Operations {
		for _, typ := range []string{op.RequestType, op.ReplyType} {
			if _, err := Schema(typ); err != nil {
				t.Errorf("op %s: no schema for %s", op.Endpoint(), typ)
			}
		}
	}
}

func TestAuditRequestAppendJSON(t *testing.T) {
	for _, a := range []AuditRequest{
		{Agent: "a1", Subject: "agentauth.a1.sys.info", Outcome: "ok", Instance: "i", Received: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)},
		{Agent: "a1", Subject: "s", Operation: "sys.info", RequestID: "id-1", RequestType: "t", Outcome: "error", Code: CodeSchemaViolation,
			Message: `data "x" <not> & 'y' \ é` + "\n\x01", DurationUS: 123456, Traceparent: "00-aa-bb-01", Instance: "i", Received: time.Now()},
		{},
	} {
		want, err := json.Marshal(&a)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

func TestSysInfoAppendJSON(t *testing.T) {
	if want, _ := json.Marshal(SysInfoRequest{}); string(SysInfoRequest{}.AppendJSON(nil)) != string(want) {
		t.Errorf("SysInfoRequest.AppendJSON: %s, json.Marshal: %s", SysInfoRequest{}.AppendJSON(nil), want)
	}
	for _, s := range []SysInfo{
		{},
		{Service: "agentauth", Version: "1.2.3", Instance: "i<&>", Agent: "a1", ServerTime: time.Date(2026, 1, 2, 3, 4, 5, 60, time.UTC), Capabilities: Capabilities{Sys: true, Retrieval: true}},
		{Service: "x\"y", ServerTime: time.Now(), Capabilities: Capabilities{User: true, Vault: true, Approval: true}},
	} {
		want, err := json.Marshal(&s)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

// TestValidatorRemembers: a large payload validated once is accepted
// again from memory, an invalid one is never remembered, and the type is
// part of what is remembered.
func TestValidatorRemembers(t *testing.T) {
	v := MustValidator()
	good := []byte(`{"user_token":"` + strings.Repeat("a", 1000) + `"}`)
	for i := 0; i < 2; i++ {
		if err := v.Validate(TypeWhoAmIRequest, good); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if len(v.valid) != 1 {
		t.Errorf("remembered %d payloads, want 1", len(v.valid))
	}
	// The same bytes under a type whose schema they fail.
	if err := v.Validate(TypeExchangeRequest, good); err == nil {
		t.Error("a payload valid for one type passed for another")
	}
	bad := []byte(`{"user_token":"` + strings.Repeat("a", 1000) + `","x":1}`)
	for i := 0; i < 2; i++ {
		if err := v.Validate(TypeWhoAmIRequest, bad); err == nil {
			t.Fatalf("round %d: invalid payload accepted", i)
		}
	}
	if len(v.valid) != 1 {
		t.Errorf("an invalid payload was remembered")
	}
}

func TestUserAppendJSON(t *testing.T) {
	for _, w := range []WhoAmI{
		{},
		{Subject: "dev-alice", Issuer: "http://127.0.0.1:8080/dev-idp", Email: "a@example.com", EmailVerified: true, Name: "Alice <A&B>", AuthorizedParty: "cli", Audience: []string{"agentauth", "cli"}, Scopes: []string{}, ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 7, time.UTC)},
	} {
		want, _ := json.Marshal(&w)
		if got := w.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("WhoAmI.AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
	for _, r := range []WhoAmIRequest{{}, {UserToken: "eyJ.eyJ.sig"}, {UserToken: "a\"b\\c\u2028<"}} {
		want, _ := json.Marshal(&r)
		if got := r.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("WhoAmIRequest.AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

func TestVaultTokenAppendJSON(t *testing.T) {
	for _, v := range []VaultToken{
		{},
		{Connection: "google", TokenType: "Bearer", Scopes: []string{"openid", "a\"b"}, ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 7, time.UTC), Fingerprint: "sha256:0011223344556677",
			SealedToken: Sealed{Alg: SealAlg, Sender: "XABC", Recipient: "XDEF", Ciphertext: []byte{0, 1, 2, 250, 251, 252, 253}}},
		{Connection: "notion", Scopes: []string{}, SealedToken: Sealed{Ciphertext: []byte{}}},
	} {
		want, _ := json.Marshal(&v)
		if got := v.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("VaultToken.AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

func TestAuditVaultAppendJSON(t *testing.T) {
	for _, a := range []AuditVault{
		{},
		{Event: "token.issued", Agent: "mail-bot", Subject: "dev-alice", Issuer: "http://x/dev-idp", Connection: "demo", Scopes: []string{"openid", "<&>"},
			Fingerprint: "sha256:0011223344556677", ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 7, time.FixedZone("x", 3600)), Reason: "r\"", RequestID: "id-1"},
		{Event: "connection.needs_reauth", Subject: "s", Issuer: "i", Connection: "c", Scopes: []string{}, Reason: "invalid_grant"},
	} {
		want, _ := json.Marshal(&a)
		if got := a.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AuditVault.AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}
