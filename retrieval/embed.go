package retrieval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

var (
	_ Embedder = Lexical{}
	_ Embedder = (*OpenAI)(nil)
)

// LexicalDimensions is the size of Lexical's vectors.
const LexicalDimensions = 384

// Lexical is the built-in offline embedder. It is lexical, not semantic:
// two texts are similar when they share words (and adjacent word pairs),
// not when they mean the same thing — "car" and "automobile" are
// unrelated to it. It needs no model, no network and no state, and the
// same text always gives the same vector, on every machine.
//
// A text is normalized (Unicode NFKC, lower case) and cut into tokens:
// runs of letters, marks and digits; each Han, Hiragana or Katakana
// character is a token of its own (those scripts do not separate words
// with spaces, and adjacent-character pairs then act as words). Unless
// KeepStopWords is set, common English words (the, of, and, …) are
// dropped — except when a text has nothing else. Every token (unigram)
// and every pair of adjacent tokens (bigram) is hashed with 64-bit
// FNV-1a into one of 384 dimensions with a sign taken from the hash
// (feature hashing), weighted 1+ln(count) (sub-linear term frequency),
// and the vector is L2-normalized. There is no inverse document
// frequency: the embedder knows no corpus. With 384 dimensions distinct
// features collide (a ten-word text has a one-in-ten chance that two of
// its features share a dimension), which adds noise to the scores. A
// text without tokens gives the zero vector. Use an OpenAI-compatible endpoint (OpenAI) for
// embeddings that capture meaning.
//
// The zero value is ready to use and safe for concurrent use.
type Lexical struct {
	// KeepStopWords keeps common English words. It changes the vectors,
	// so it changes Name.
	KeepStopWords bool
}

// Name is "lexical-384-v1" ("lexical-384-v1-stopwords" with
// KeepStopWords). A change of the algorithm changes the name, so that
// documents embedded by the old one are re-embedded by a reindex.
func (l Lexical) Name() string {
	if l.KeepStopWords {
		return "lexical-384-v1-stopwords"
	}
	return "lexical-384-v1"
}

// Dimensions is 384.
func (Lexical) Dimensions() int { return LexicalDimensions }

// Embed returns one L2-normalized vector per text. It fails only when ctx
// is done.
func (l Lexical) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		out[i] = l.embed(t)
	}
	return out, nil
}

func (l Lexical) embed(text string) []float32 {
	toks := tokenize(text)
	if !l.KeepStopWords {
		kept := toks[:0:0]
		for _, t := range toks {
			if !stopWords[t] {
				kept = append(kept, t)
			}
		}
		if len(kept) > 0 {
			toks = kept
		}
	}
	counts := make(map[uint64]int, 2*len(toks))
	for i, t := range toks {
		counts[featureHash(1, t, "")]++
		if i > 0 {
			counts[featureHash(2, toks[i-1], t)]++
		}
	}
	v := make([]float32, LexicalDimensions)
	for h, n := range counts {
		w := 1 + math.Log(float64(n))
		if h>>63 == 1 {
			w = -w
		}
		v[h%LexicalDimensions] += float32(w)
	}
	normalize(v)
	return v
}

// featureHash is FNV-1a over a kind byte (1 unigram, 2 bigram) and the
// token(s), a NUL between the two tokens of a bigram.
func featureHash(kind byte, a, b string) uint64 {
	h := fnv.New64a()
	h.Write([]byte{kind})
	h.Write([]byte(a))
	if kind == 2 {
		h.Write([]byte{0})
		h.Write([]byte(b))
	}
	return h.Sum64()
}

// tokenize lowercases text (after NFKC) and returns its words.
func tokenize(text string) []string {
	text = strings.ToLower(norm.NFKC.String(text))
	var toks []string
	start := -1
	for i, r := range text {
		switch {
		case isIdeograph(r):
			if start >= 0 {
				toks = append(toks, text[start:i])
				start = -1
			}
			toks = append(toks, text[i:i+utf8.RuneLen(r)])
		case unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			if start < 0 {
				start = i
			}
		default:
			if start >= 0 {
				toks = append(toks, text[start:i])
				start = -1
			}
		}
	}
	if start >= 0 {
		toks = append(toks, text[start:])
	}
	return toks
}

func isIdeograph(r rune) bool {
	return r >= 0x2E80 && (unicode.Is(unicode.Han, r) || unicode.Is(unicode.Hiragana, r) || unicode.Is(unicode.Katakana, r))
}

// stopWords are common English function words.
var stopWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`a about above after again against all am an and any are as at be
		because been before being below between both but by can could did do does doing down during each
		few for from further had has have having he her here hers herself him himself his how i if in into
		is it its itself just me more most my myself no nor not now of off on once only or other our ours
		ourselves out over own same she should so some such than that the their theirs them themselves then
		there these they this those through to too under until up very was we were what when where which
		while who whom why will with would you your yours yourself yourselves s t d ll m re ve`) {
		m[w] = true
	}
	return m
}()

// normalize scales v to unit length in place; it reports false (and
// leaves v alone) when v is zero.
func normalize(v []float32) bool {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return false
	}
	inv := 1 / math.Sqrt(s)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
	return true
}

// finite reports whether every element of v is a finite number.
func finite(v []float32) bool {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}

// OpenAI embeds with an OpenAI-compatible /v1/embeddings endpoint:
// OpenAI itself, Ollama, vLLM, Hugging Face TEI, LiteLLM and others. It
// sends texts in batches (BatchSize per request), retries rate limits
// (429, honouring Retry-After), server errors (5xx) and network errors a
// few times with backoff, checks that every vector has Dims
// elements, and L2-normalizes them. Empty texts are not sent (OpenAI
// rejects them): they get the zero vector.
//
// Set the fields before the first call; an OpenAI is then safe for
// concurrent use. Errors name the endpoint, the HTTP status and the
// server's own error message; the API key is never in them.
type OpenAI struct {
	// URL is the endpoint ("http://localhost:11434/v1/embeddings") or
	// the API's base URL: "/embeddings" is added to a URL ending in /v1,
	// "/v1/embeddings" to any other one ("https://api.openai.com").
	URL string
	// Model is the "model" of the request ("text-embedding-3-small",
	// "nomic-embed-text", …). Required.
	Model string
	// APIKey, when set, is sent as "Authorization: Bearer …".
	APIKey string
	// Dims is the size of the model's vectors (the Dimensions method;
	// a field of that name cannot exist beside it). Required: a response
	// of another size is an error.
	Dims int
	// SendDimensions asks the server for vectors of Dims elements
	// (the request's "dimensions": OpenAI's text-embedding-3 models;
	// other servers may reject it).
	SendDimensions bool
	// HTTPClient sends the requests; nil: http.DefaultClient.
	HTTPClient *http.Client
	// BatchSize is the number of texts per request; 0: 64.
	BatchSize int
	// Timeout bounds each request; 0: 60s.
	Timeout time.Duration
	// MaxRetries is how many times a failed request is retried; 0: 2,
	// negative: never.
	MaxRetries int
	// RetryWait is the first backoff, doubled on each retry (a
	// Retry-After header, up to 30s, takes precedence); 0: 500ms.
	RetryWait time.Duration
}

// Name is "openai-compatible/<model>/<dims>".
func (o *OpenAI) Name() string {
	return "openai-compatible/" + o.Model + "/" + strconv.Itoa(o.Dims)
}

// Dimensions is o.Dims.
func (o *OpenAI) Dimensions() int { return o.Dims }

// Endpoint is the URL requests go to.
func (o *OpenAI) Endpoint() string {
	u := strings.TrimRight(o.URL, "/")
	switch {
	case strings.HasSuffix(u, "/embeddings"):
		return u
	case strings.HasSuffix(u, "/v1"):
		return u + "/embeddings"
	default:
		return u + "/v1/embeddings"
	}
}

// Embed returns one L2-normalized vector per text, in order.
func (o *OpenAI) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if o.Model == "" || o.Dims <= 0 || o.URL == "" {
		return nil, errors.New("embeddings: URL, Model and Dims must be set")
	}
	batch := o.BatchSize
	if batch <= 0 {
		batch = 64
	}
	out := make([][]float32, len(texts))
	var idx []int
	var send []string
	flush := func() error {
		if len(send) == 0 {
			return nil
		}
		vs, err := o.request(ctx, send)
		if err != nil {
			return err
		}
		for j, v := range vs {
			out[idx[j]] = v
		}
		idx, send = idx[:0], send[:0]
		return nil
	}
	for i, t := range texts {
		if strings.TrimSpace(t) == "" {
			out[i] = make([]float32, o.Dims)
			continue
		}
		idx = append(idx, i)
		send = append(send, t)
		if len(send) == batch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// maxEmbeddingsResponse caps a response body (64 texts × 4,096
// dimensions as JSON is about 6 MB).
const maxEmbeddingsResponse = 64 << 20

type embeddingsRequest struct {
	Model      string   `json:"model"`
	Input      []string `json:"input"`
	Dimensions int      `json:"dimensions,omitempty"`
}

type embeddingsResponse struct {
	Data []struct {
		Embedding []float32 `json:"embedding"`
		Index     *int      `json:"index"`
	} `json:"data"`
}

// httpStatusError is a response that was not a success.
type httpStatusError struct {
	status     int
	statusText string
	message    string
	retryAfter time.Duration
}

func (e *httpStatusError) Error() string {
	s := "HTTP " + e.statusText
	if e.message != "" {
		s += ": the server said " + strconv.Quote(e.message)
	}
	switch e.status {
	case http.StatusUnauthorized, http.StatusForbidden:
		s += " (check the API key)"
	case http.StatusNotFound:
		s += " (check the URL and the model name)"
	}
	return s
}

func (e *httpStatusError) retryable() bool {
	return e.status == http.StatusTooManyRequests || e.status == http.StatusRequestTimeout || e.status >= 500
}

func (o *OpenAI) request(ctx context.Context, texts []string) ([][]float32, error) {
	body, err := json.Marshal(embeddingsRequest{Model: o.Model, Input: texts, Dimensions: o.sendDims()})
	if err != nil {
		return nil, err
	}
	retries := o.MaxRetries
	if retries == 0 {
		retries = 2
	}
	wait := o.RetryWait
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	endpoint := o.Endpoint()
	for attempt := 0; ; attempt++ {
		vs, err := o.once(ctx, endpoint, body, len(texts))
		if err == nil {
			return vs, nil
		}
		var se *httpStatusError
		retry := ctx.Err() == nil
		if errors.As(err, &se) {
			retry = retry && se.retryable()
		} else if errors.Is(err, errBadResponse) {
			retry = false
		}
		if !retry || attempt >= retries {
			if attempt > 0 {
				return nil, fmt.Errorf("embeddings %s (model %s, %d attempts): %w", endpoint, o.Model, attempt+1, err)
			}
			return nil, fmt.Errorf("embeddings %s (model %s): %w", endpoint, o.Model, err)
		}
		d := wait << attempt
		if se != nil && se.retryAfter > 0 {
			d = min(se.retryAfter, 30*time.Second)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("embeddings %s (model %s): %w (while waiting to retry after: %v)", endpoint, o.Model, ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (o *OpenAI) sendDims() int {
	if o.SendDimensions {
		return o.Dims
	}
	return 0
}

// errBadResponse marks a response that was received but cannot be used;
// it is not retried.
var errBadResponse = errors.New("unusable response")

func (o *OpenAI) once(ctx context.Context, endpoint string, body []byte, n int) ([][]float32, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadResponse, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
	}
	client := o.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEmbeddingsResponse+1))
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &httpStatusError{
			status:     resp.StatusCode,
			statusText: resp.Status,
			message:    serverMessage(data),
			retryAfter: retryAfter(resp.Header.Get("Retry-After")),
		}
	}
	if len(data) > maxEmbeddingsResponse {
		return nil, fmt.Errorf("%w: the response is larger than %d bytes", errBadResponse, maxEmbeddingsResponse)
	}
	return parseEmbeddings(data, n, o.Dims)
}

// parseEmbeddings decodes an embeddings response for n texts and checks
// and normalizes its vectors of dims elements.
func parseEmbeddings(data []byte, n, dims int) ([][]float32, error) {
	var r embeddingsResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: the response is not the embeddings JSON expected (%v): %s", errBadResponse, err, snippet(data))
	}
	if len(r.Data) != n {
		return nil, fmt.Errorf("%w: %d texts sent, %d embeddings returned", errBadResponse, n, len(r.Data))
	}
	out := make([][]float32, n)
	for i, d := range r.Data {
		j := i
		if d.Index != nil {
			j = *d.Index
		}
		if j < 0 || j >= n || out[j] != nil {
			return nil, fmt.Errorf("%w: embedding index %d is out of range or repeated", errBadResponse, j)
		}
		if len(d.Embedding) != dims {
			return nil, fmt.Errorf("%w: the model returned %d-dimension vectors, Dims is %d: configure the model's size (and run `agentauth docs reindex` after changing it)", errBadResponse, len(d.Embedding), dims)
		}
		if !finite(d.Embedding) {
			return nil, fmt.Errorf("%w: embedding %d holds a NaN or infinite number", errBadResponse, j)
		}
		normalize(d.Embedding)
		out[j] = d.Embedding
	}
	return out, nil
}

// serverMessage extracts the error message of an error response: OpenAI
// and vLLM {"error":{"message":…}}, Ollama and TEI {"error":"…"}, some
// proxies {"message":…} or {"detail":…}; otherwise the start of the body.
func serverMessage(data []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(data, &e) == nil {
		var s string
		var obj struct {
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(e.Error, &s) == nil && s != "":
			return s
		case json.Unmarshal(e.Error, &obj) == nil && obj.Message != "":
			return obj.Message
		case e.Message != "":
			return e.Message
		case e.Detail != nil:
			b, _ := json.Marshal(e.Detail)
			return snippet(b)
		}
	}
	return snippet(data)
}

func snippet(b []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if len(s) > 200 {
		i := 200
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + "…"
	}
	return s
}

func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(h); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
