package retrieval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLexicalTokenize(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"words and digits", "The 2021 Roadmap: Q3-goals!", []string{"the", "2021", "roadmap", "q3", "goals"}},
		{"accents and case", "Ünïcode ÉTÉ café", []string{"ünïcode", "été", "café"}},
		{"NFKC", "ｆｕｌｌｗｉｄｔｈ ﬁle", []string{"fullwidth", "file"}},
		{"ideographs one by one", "機密文書 report", []string{"機", "密", "文", "書", "report"}},
		{"punctuation only", "— !! …", nil},
		{"cyrillic", "Привет, мир", []string{"привет", "мир"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tokenize(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("tokenize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func cosine(a, b []float32) float64 {
	var s, na, nb float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return s / math.Sqrt(na*nb)
}

func norm2(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestLexicalEmbed(t *testing.T) {
	ctx := context.Background()
	var l Lexical
	if got, want := l.Name(), "lexical-384-v1"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	if got := (Lexical{KeepStopWords: true}).Name(); got == l.Name() {
		t.Errorf("KeepStopWords does not change the name %q", got)
	}
	texts := []string{
		"the quarterly revenue report for 2021",
		"Quarterly revenue REPORT, 2021.",
		"a recipe for chocolate cake",
		"",
		"the of and",
	}
	vs, err := l.Embed(ctx, texts)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if len(v) != 384 {
			t.Fatalf("vector %d has %d dimensions, want 384", i, len(v))
		}
	}
	for _, i := range []int{0, 1, 2, 4} {
		if n := norm2(vs[i]); math.Abs(n-1) > 1e-5 {
			t.Errorf("|v%d| = %v, want 1", i, n)
		}
	}
	if n := norm2(vs[3]); n != 0 {
		t.Errorf("the empty text's vector has norm %v, want 0", n)
	}
	if c := cosine(vs[0], vs[1]); c < 0.99 {
		t.Errorf("same words, other case and punctuation: cosine %v, want ≈ 1 (stop words dropped)", c)
	}
	if c := cosine(vs[0], vs[2]); c > 0.3 {
		t.Errorf("unrelated texts: cosine %v, want small", c)
	}
	again, _ := l.Embed(ctx, texts[:1])
	if !slices.Equal(again[0], vs[0]) {
		t.Error("the same text gave another vector")
	}
	// Shared words make texts closer: ranking follows word overlap.
	q, _ := l.Embed(ctx, []string{"revenue report"})
	if cosine(q[0], vs[0]) <= cosine(q[0], vs[2]) {
		t.Error("a query sharing words with a text does not rank it above an unrelated one")
	}
	// Word order matters a little (bigrams), not a lot.
	ab, _ := l.Embed(ctx, []string{"alpha beta gamma", "gamma beta alpha"})
	if c := cosine(ab[0], ab[1]); c < 0.3 || c > 0.95 {
		t.Errorf("reordered words: cosine %v, want between 0.3 and 0.95", c)
	}
	// Sub-linear tf: a word repeated ten times does not weigh ten times.
	rep, _ := l.Embed(ctx, []string{"zebra " + strings.Repeat("lion ", 10), "zebra lion"})
	if c := cosine(rep[0], rep[1]); c < 0.6 {
		t.Errorf("repeated word: cosine %v, want > 0.6 (sub-linear weighting)", c)
	}
	// Exact values are part of the name "lexical-384-v1": a change of the
	// algorithm must change the name (and the documents get re-embedded).
	golden, _ := l.Embed(ctx, []string{"The 2021 roadmap"})
	var nz []string
	for i, x := range golden[0] {
		if x != 0 {
			nz = append(nz, fmt.Sprintf("%d:%.4f", i, x))
		}
	}
	if got, want := strings.Join(nz, " "), lexicalGolden; got != want {
		t.Errorf("lexical-384-v1 of %q changed:\n got %s\nwant %s\n(a new algorithm needs a new Name)", "The 2021 roadmap", got, want)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Embed(ctx2, texts); !errors.Is(err, context.Canceled) {
		t.Errorf("Embed with a cancelled context: %v, want context.Canceled", err)
	}
}

// lexicalGolden is Lexical's vector of "The 2021 roadmap".
const lexicalGolden = "111:0.5774 308:0.5774 362:-0.5774"

// fakeEmbeddings is an OpenAI-compatible endpoint: each text's vector is
// derived from its length; fail, when set, answers instead.
type fakeEmbeddings struct {
	dims     int
	requests atomic.Int32
	maxBatch atomic.Int32
	fail     func(n int32, w http.ResponseWriter) bool // n: the request's number, from 1
	lastAuth atomic.Value
}

func (f *fakeEmbeddings) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.requests.Add(1)
	f.lastAuth.Store(r.Header.Get("Authorization"))
	if r.URL.Path != "/v1/embeddings" || r.Method != http.MethodPost {
		http.Error(w, `{"error":{"message":"no route"}}`, http.StatusNotFound)
		return
	}
	if f.fail != nil && f.fail(n, w) {
		return
	}
	var req embeddingsRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
		return
	}
	if int32(len(req.Input)) > f.maxBatch.Load() {
		f.maxBatch.Store(int32(len(req.Input)))
	}
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	}
	out := struct {
		Data  []item `json:"data"`
		Model string `json:"model"`
	}{Model: req.Model}
	// Answer in reverse order: clients must use "index".
	for i := len(req.Input) - 1; i >= 0; i-- {
		v := make([]float32, f.dims)
		v[0] = float32(len(req.Input[i]))
		v[1] = 1
		out.Data = append(out.Data, item{"embedding", i, v})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func TestOpenAIEmbed(t *testing.T) {
	f := &fakeEmbeddings{dims: 8}
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := &OpenAI{URL: srv.URL, Model: "m", APIKey: "sk-test", Dims: 8, BatchSize: 3}
	if got, want := o.Endpoint(), srv.URL+"/v1/embeddings"; got != want {
		t.Errorf("Endpoint() = %q, want %q", got, want)
	}
	texts := []string{"a", "bb", "", "dddd", "eeeee", "ffffff", "ggggggg"}
	vs, err := o.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.requests.Load(); got != 2 {
		t.Errorf("%d requests for 6 non-empty texts in batches of 3, want 2", got)
	}
	if got := f.maxBatch.Load(); got != 3 {
		t.Errorf("largest batch %d, want 3", got)
	}
	if got := f.lastAuth.Load(); got != "Bearer sk-test" {
		t.Errorf("Authorization %q", got)
	}
	for i, v := range vs {
		if len(v) != 8 {
			t.Fatalf("vector %d: %d dimensions", i, len(v))
		}
		if texts[i] == "" {
			if norm2(v) != 0 {
				t.Errorf("the empty text got %v, want the zero vector", v)
			}
			continue
		}
		l := float64(len(texts[i]))
		want := l / math.Sqrt(l*l+1)
		if math.Abs(float64(v[0])-want) > 1e-6 || math.Abs(norm2(v)-1) > 1e-6 {
			t.Errorf("vector %d = %v: not text %d's, normalized", i, v[:2], i)
		}
	}
	if got, want := o.Name(), "openai-compatible/m/8"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}

func TestOpenAIEndpoint(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"https://api.openai.com", "https://api.openai.com/v1/embeddings"},
		{"https://api.openai.com/v1", "https://api.openai.com/v1/embeddings"},
		{"http://localhost:11434/v1/", "http://localhost:11434/v1/embeddings"},
		{"http://tei:8080/v1/embeddings", "http://tei:8080/v1/embeddings"},
	} {
		if got := (&OpenAI{URL: tt.url}).Endpoint(); got != tt.want {
			t.Errorf("Endpoint of %q = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestOpenAIQuirks(t *testing.T) {
	tests := []struct {
		name     string
		dims     int
		fail     func(n int32, w http.ResponseWriter) bool
		wantErr  []string // substrings; none: success
		requests int32
	}{
		{
			name: "a 500 then success is retried",
			fail: func(n int32, w http.ResponseWriter) bool {
				if n == 1 {
					http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusInternalServerError)
					return true
				}
				return false
			},
			requests: 2,
		},
		{
			name: "a persistent 500 says the status and the server's message",
			fail: func(n int32, w http.ResponseWriter) bool {
				http.Error(w, `{"error":{"message":"the model crashed","type":"server_error"}}`, http.StatusInternalServerError)
				return true
			},
			wantErr:  []string{"500", "the model crashed", "3 attempts", "/v1/embeddings"},
			requests: 3,
		},
		{
			name: "a 429 honours Retry-After and is retried",
			fail: func(n int32, w http.ResponseWriter) bool {
				if n == 1 {
					w.Header().Set("Retry-After", "0")
					http.Error(w, `{"error":{"message":"Rate limit reached"}}`, http.StatusTooManyRequests)
					return true
				}
				return false
			},
			requests: 2,
		},
		{
			name: "a persistent 429 is an error with the server's message",
			fail: func(n int32, w http.ResponseWriter) bool {
				http.Error(w, `{"error":{"message":"Rate limit reached for requests"}}`, http.StatusTooManyRequests)
				return true
			},
			wantErr:  []string{"429", "Rate limit reached for requests"},
			requests: 3,
		},
		{
			name: "Ollama's string error, 401 is not retried and hints at the key",
			fail: func(n int32, w http.ResponseWriter) bool {
				http.Error(w, `{"error":"invalid api key"}`, http.StatusUnauthorized)
				return true
			},
			wantErr:  []string{"401", "invalid api key", "check the API key"},
			requests: 1,
		},
		{
			name:     "wrong dimensions",
			dims:     5,
			wantErr:  []string{"5-dimension vectors", "Dims is 8"},
			requests: 1,
		},
		{
			name: "malformed JSON is not retried",
			fail: func(n int32, w http.ResponseWriter) bool {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"data":[{"embedding":[0.1, 0.2`)
				return true
			},
			wantErr:  []string{"not the embeddings JSON", `{"data"`},
			requests: 1,
		},
		{
			name: "a count that does not match",
			fail: func(n int32, w http.ResponseWriter) bool {
				io.WriteString(w, `{"data":[]}`)
				return true
			},
			wantErr:  []string{"2 texts sent, 0 embeddings returned"},
			requests: 1,
		},
		{
			name: "plain-text error body",
			fail: func(n int32, w http.ResponseWriter) bool {
				http.Error(w, "upstream connect error", http.StatusBadGateway)
				return true
			},
			wantErr:  []string{"502", "upstream connect error"},
			requests: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dims := tt.dims
			if dims == 0 {
				dims = 8
			}
			f := &fakeEmbeddings{dims: dims, fail: tt.fail}
			srv := httptest.NewServer(f)
			defer srv.Close()
			o := &OpenAI{URL: srv.URL + "/v1", Model: "m", APIKey: "sk-secret-key", Dims: 8, RetryWait: time.Millisecond}
			vs, err := o.Embed(context.Background(), []string{"x", "yy"})
			if got := f.requests.Load(); got != tt.requests {
				t.Errorf("%d requests, want %d", got, tt.requests)
			}
			if len(tt.wantErr) == 0 {
				if err != nil || len(vs) != 2 {
					t.Fatalf("Embed: %v, %d vectors; want success", err, len(vs))
				}
				return
			}
			if err == nil {
				t.Fatal("Embed succeeded, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "sk-secret-key") {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestOpenAITimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	o := &OpenAI{URL: srv.URL, Model: "m", Dims: 8, Timeout: 50 * time.Millisecond, MaxRetries: -1}
	start := time.Now()
	_, err := o.Embed(context.Background(), []string{"x"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Embed against a server that does not answer: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the timeout took %v", d)
	}
}

// FuzzParseEmbeddings: whatever an embeddings server answers, the
// decoder returns either an error or n unit (or zero) vectors of dims
// finite elements, and never panics.
func FuzzParseEmbeddings(f *testing.F) {
	f.Add([]byte(`{"data":[{"embedding":[1,2,3],"index":1},{"embedding":[0,0,1],"index":0}]}`), 2)
	f.Add([]byte(`{"data":[{"embedding":[1,2,3]}]}`), 1)
	f.Add([]byte(`{"data":[{"embedding":[1e39,2,3]}]}`), 1)
	f.Add([]byte(`{"data":[{"embedding":[1,2,3],"index":-1}]}`), 1)
	f.Add([]byte(`{"data":[{"embedding":"AAAA"}]}`), 1)
	f.Add([]byte(`{"error":{"message":"x"}}`), 0)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		if n < 0 || n > 64 {
			return
		}
		vs, err := parseEmbeddings(data, n, 3)
		if err != nil {
			if !errors.Is(err, errBadResponse) {
				t.Fatalf("error %v does not wrap errBadResponse", err)
			}
			return
		}
		if len(vs) != n {
			t.Fatalf("%d vectors for %d texts", len(vs), n)
		}
		for _, v := range vs {
			if len(v) != 3 || !finite(v) {
				t.Fatalf("vector %v", v)
			}
			if l := norm2(v); l != 0 && math.Abs(l-1) > 1e-5 {
				t.Fatalf("vector %v of norm %v", v, l)
			}
		}
		_ = serverMessage(data)
	})
}
