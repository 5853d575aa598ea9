package retrieval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	openfgav1 "github.com/openfga/api/proto/openfga/v1"
	openfga "github.com/openfga/go-sdk"
	"github.com/openfga/language/pkg/go/transformer"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// FGA errors. Every error FGA returns wraps one of them (errors.Is) and
// says what to do in its message.
var (
	// ErrFGAUnavailable: OpenFGA could not answer (not reachable, timed
	// out, an internal error, rate limited). Callers fail closed.
	ErrFGAUnavailable = errors.New("OpenFGA unavailable")
	// ErrFGAUnauthorized: OpenFGA refused the credentials.
	ErrFGAUnauthorized = errors.New("OpenFGA refused the credentials")
	// ErrFGAInvalid: OpenFGA rejected the request (an unknown type or
	// relation, a malformed tuple or model, a missing store).
	ErrFGAInvalid = errors.New("OpenFGA rejected the request")
	// ErrFGANoModel: the store has no authorization model yet.
	ErrFGANoModel = errors.New("no authorization model")
)

// OpenFGA's own limits, which FGA chunks by.
const (
	fgaMaxBatchChecks  = 50  // checks per /batch-check call (OpenFGA's default maxChecksPerBatchCheck)
	fgaMaxTuplesWrite  = 100 // tuples per /write call (OpenFGA's default maxTuplesPerWrite)
	fgaBatchParallel   = 8   // /batch-check calls in flight per BatchCheck
	fgaMaxResponseBody = 64 << 20
)

// FGAConfig configures an FGA client.
type FGAConfig struct {
	// URL is OpenFGA's HTTP API, e.g. http://127.0.0.1:18080.
	URL string
	// StoreID and ModelID pin a store and a model. Empty StoreID: NewFGA
	// finds the store named StoreName or creates it. Empty ModelID: the
	// store's latest model, re-read every ModelRefresh.
	StoreID, ModelID string
	// StoreName defaults to "agentauth".
	StoreName string
	// APIToken is sent as a bearer token (OpenFGA's preshared keys). Or
	// client credentials (Auth0 FGA, OIDC): ClientID, ClientSecret,
	// TokenIssuer (a host or URL; "/oauth/token" when it has no path) and
	// Audience.
	APIToken                                      string
	ClientID, ClientSecret, TokenIssuer, Audience string
	// HTTPClient is the base client (default: a new one); FGA adds the
	// credentials to it.
	HTTPClient *http.Client
	// Timeout bounds every call to OpenFGA but ListObjects (default 3 s).
	Timeout time.Duration
	// ListObjectsMax is the server's ListObjects result cap (OpenFGA's
	// default 1000): a result of that many objects is reported truncated.
	ListObjectsMax int
	// ListObjectsDeadline is the server's ListObjects deadline (OpenFGA's
	// default 3 s): OpenFGA answers with what it found so far when it hits
	// it, so an answer that took that long is reported truncated.
	ListObjectsDeadline time.Duration
	// ListObjectsTimeout bounds a ListObjects call (default
	// ListObjectsDeadline + 2 s). It must exceed the deadline: the partial
	// answer OpenFGA sends at its deadline has to arrive to be reported
	// truncated (and served by the post-filter) rather than be an error.
	ListObjectsTimeout time.Duration
	// ModelRefresh is how often the latest model id is re-read when
	// ModelID is not pinned (default 10 s), so a model written by another
	// process is picked up.
	ModelRefresh time.Duration
}

// Tuple is an OpenFGA relationship tuple in the fga CLI's tuple-file
// shape.
type Tuple struct {
	User      string          `json:"user" yaml:"user"`
	Relation  string          `json:"relation" yaml:"relation"`
	Object    string          `json:"object" yaml:"object"`
	Condition *TupleCondition `json:"condition,omitempty" yaml:"condition,omitempty"`
}

// TupleCondition names a condition of the model and the context stored
// with the tuple.
type TupleCondition struct {
	Name    string         `json:"name" yaml:"name"`
	Context map[string]any `json:"context,omitempty" yaml:"context,omitempty"`
}

func (t Tuple) String() string {
	s := t.User + " " + t.Relation + " " + t.Object
	if t.Condition != nil {
		s += " with " + t.Condition.Name
	}
	return s
}

// FGAOptions are the optional parts of an authorization question.
type FGAOptions struct {
	Consistency Consistency
	// Context is the request context for conditions (e.g. current_time).
	Context map[string]any
	// ContextualTuples are considered as if written, for this call only.
	ContextualTuples []Tuple
}

// FGA talks to an OpenFGA HTTP API: store and model bootstrapping, tuple
// writes, and the authorization questions retrieval asks. It is safe for
// concurrent use.
type FGA struct {
	cfg     FGAConfig
	base    string
	hc      *http.Client
	api     *openfga.APIClient
	storeID string

	mu      sync.Mutex
	modelID string
	modelAt time.Time
	pinned  bool
	sf      singleflight.Group
}

var _ Checker = (*FGA)(nil)

// NewFGA connects to OpenFGA at c.URL and bootstraps the store: the one
// c.StoreID names, or the oldest store named c.StoreName, created when
// there is none. A model is not required yet: calls that need one fail
// with ErrFGANoModel until one is written.
func NewFGA(ctx context.Context, c FGAConfig) (*FGA, error) {
	if c.StoreName == "" {
		c.StoreName = "agentauth"
	}
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Second
	}
	if c.ListObjectsMax <= 0 {
		c.ListObjectsMax = 1000
	}
	if c.ListObjectsDeadline <= 0 {
		c.ListObjectsDeadline = 3 * time.Second
	}
	if c.ListObjectsTimeout <= 0 {
		c.ListObjectsTimeout = c.ListObjectsDeadline + 2*time.Second
	}
	if c.ModelRefresh <= 0 {
		c.ModelRefresh = 10 * time.Second
	}
	base := strings.TrimRight(c.URL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("OpenFGA URL %q: want http(s)://host:port: %w", c.URL, ErrFGAInvalid)
	}
	hc, err := fgaHTTPClient(c)
	if err != nil {
		return nil, err
	}
	sdkCfg, err := openfga.NewConfiguration(openfga.Configuration{
		ApiUrl:     base,
		HTTPClient: hc,
		UserAgent:  "agentauth",
		// The SDK retries only 429 and 5xx, MinWaitInMs+1 times (it reads
		// the attempt count from MinWaitInMs): keep both small.
		RetryParams: &openfga.RetryParams{MaxRetry: 1, MinWaitInMs: 1},
	})
	if err != nil {
		return nil, fmt.Errorf("OpenFGA URL %q: %v: %w", c.URL, err, ErrFGAInvalid)
	}
	f := &FGA{cfg: c, base: base, hc: hc, api: openfga.NewAPIClient(sdkCfg)}
	if c.StoreID != "" {
		cctx, cancel := f.callCtx(ctx)
		_, resp, err := f.api.OpenFgaApi.GetStore(cctx, c.StoreID).Execute()
		cancel()
		if err != nil {
			return nil, f.sdkErr(ctx, "get store "+c.StoreID, resp, err)
		}
		f.storeID = c.StoreID
	} else if f.storeID, err = f.findOrCreateStore(ctx, c.StoreName); err != nil {
		return nil, err
	}
	if c.ModelID != "" {
		cctx, cancel := f.callCtx(ctx)
		_, resp, err := f.api.OpenFgaApi.ReadAuthorizationModel(cctx, f.storeID, c.ModelID).Execute()
		cancel()
		if err != nil {
			return nil, f.sdkErr(ctx, "read model "+c.ModelID, resp, err)
		}
		f.modelID, f.pinned = c.ModelID, true
		return f, nil
	}
	id, err := f.latestModel(ctx)
	if err != nil {
		return nil, err
	}
	f.setModel(id)
	return f, nil
}

// StoreID is the store FGA works in.
func (f *FGA) StoreID() string { return f.storeID }

// ModelID is the model FGA currently asks with ("" when the store has
// none yet).
func (f *FGA) ModelID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.modelID
}

// URL is the OpenFGA API FGA talks to.
func (f *FGA) URL() string { return f.base }

func (f *FGA) findOrCreateStore(ctx context.Context, name string) (string, error) {
	find := func() (string, error) {
		var best string
		token := ""
		for {
			cctx, cancel := f.callCtx(ctx)
			req := f.api.OpenFgaApi.ListStores(cctx).PageSize(100)
			if token != "" {
				req = req.ContinuationToken(token)
			}
			res, resp, err := req.Execute()
			cancel()
			if err != nil {
				return "", f.sdkErr(ctx, "list stores", resp, err)
			}
			for _, s := range res.Stores {
				// Store ids are ULIDs: the smallest is the oldest, so
				// instances that raced to create it agree on one.
				if s.Name == name && s.DeletedAt == nil && (best == "" || s.Id < best) {
					best = s.Id
				}
			}
			if res.ContinuationToken == "" || len(res.Stores) == 0 {
				return best, nil
			}
			token = res.ContinuationToken
		}
	}
	id, err := find()
	if err != nil || id != "" {
		return id, err
	}
	cctx, cancel := f.callCtx(ctx)
	_, resp, err := f.api.OpenFgaApi.CreateStore(cctx).Body(openfga.CreateStoreRequest{Name: name}).Execute()
	cancel()
	if err != nil {
		return "", f.sdkErr(ctx, "create store "+name, resp, err)
	}
	return find()
}

// latestModel reads the store's newest model id ("" when there is none).
func (f *FGA) latestModel(ctx context.Context) (string, error) {
	cctx, cancel := f.callCtx(ctx)
	defer cancel()
	res, resp, err := f.api.OpenFgaApi.ReadAuthorizationModels(cctx, f.storeID).PageSize(1).Execute()
	if err != nil {
		return "", f.sdkErr(ctx, "read models", resp, err)
	}
	if len(res.AuthorizationModels) == 0 {
		return "", nil
	}
	return res.AuthorizationModels[0].Id, nil
}

func (f *FGA) setModel(id string) {
	f.mu.Lock()
	f.modelID, f.modelAt = id, time.Now()
	f.mu.Unlock()
}

// model is the model id to ask with: the pinned one, or the latest one
// (re-read every ModelRefresh, and on every call while there is none).
func (f *FGA) model(ctx context.Context) (string, error) {
	f.mu.Lock()
	id, at, pinned := f.modelID, f.modelAt, f.pinned
	f.mu.Unlock()
	if pinned || (id != "" && time.Since(at) < f.cfg.ModelRefresh) {
		return id, nil
	}
	v, err, _ := f.sf.Do("model", func() (any, error) {
		// Shared by concurrent callers: one caller's cancellation must
		// not fail the others (the call still has its timeout).
		latest, err := f.latestModel(context.WithoutCancel(ctx))
		if err != nil {
			return "", err
		}
		if latest != "" {
			f.setModel(latest)
		}
		return latest, nil
	})
	latest, _ := v.(string)
	switch {
	case err != nil && id != "":
		return id, nil // keep asking with the model we know; the call itself reports the outage
	case err != nil:
		return "", err
	case latest == "":
		return "", f.noModel()
	}
	return latest, nil
}

func (f *FGA) noModel() error {
	return fmt.Errorf("no authorization model in OpenFGA store %s at %s: run agentauth fga model write FILE.fga: %w", f.storeID, f.base, ErrFGANoModel)
}

// ParseModel turns an authorization model into OpenFGA's JSON: DSL
// (model.fga), JSON, or — when modFiles is not nil — a modular model,
// where data is the fga.mod file and modFiles holds each module it lists
// by the path written there.
func ParseModel(data []byte, modFiles map[string][]byte) ([]byte, error) {
	var m *openfgav1.AuthorizationModel
	switch trimmed := bytes.TrimSpace(data); {
	case modFiles != nil:
		mod, err := transformer.TransformModFile(string(data))
		if err != nil {
			return nil, fmt.Errorf("fga.mod: %w", err)
		}
		var modules []transformer.ModuleFile
		for _, c := range mod.Contents.Value {
			b, ok := modFiles[c.Value]
			if !ok {
				b, ok = modFiles[path.Clean(c.Value)]
			}
			if !ok {
				return nil, fmt.Errorf("fga.mod lists %s, which was not given", c.Value)
			}
			modules = append(modules, transformer.ModuleFile{Name: c.Value, Contents: string(b)})
		}
		if m, err = transformer.TransformModuleFilesToModel(modules, mod.Schema.Value); err != nil {
			return nil, fmt.Errorf("modular model: %w", err)
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		m = &openfgav1.AuthorizationModel{}
		if err := protojson.Unmarshal(trimmed, m); err != nil {
			return nil, fmt.Errorf("JSON model: %w", err)
		}
	case bytes.HasPrefix(trimmed, []byte("schema:")) || bytes.Contains(trimmed, []byte("\ncontents:")):
		return nil, errors.New("this is an fga.mod file: give its module files too (agentauth fga model write path/to/fga.mod reads them)")
	default:
		var err error
		if m, err = transformer.TransformDSLToProto(string(data)); err != nil {
			return nil, fmt.Errorf("DSL model: %w", err)
		}
	}
	if len(m.GetTypeDefinitions()) == 0 {
		return nil, errors.New("the model defines no types")
	}
	m.Id = ""
	return protojson.Marshal(m) // OpenFGA's API names (json_name), as the SDK and the server expect
}

// WriteModel writes an authorization model (see ParseModel for the
// formats) and asks with it from now on. It returns the new model id.
func (f *FGA) WriteModel(ctx context.Context, dslOrJSON []byte, modFiles map[string][]byte) (string, error) {
	js, err := ParseModel(dslOrJSON, modFiles)
	if err != nil {
		return "", fmt.Errorf("%v: %w", err, ErrFGAInvalid)
	}
	var body openfga.WriteAuthorizationModelRequest
	if err := json.Unmarshal(js, &body); err != nil {
		return "", fmt.Errorf("model: %v: %w", err, ErrFGAInvalid)
	}
	cctx, cancel := f.callCtx(ctx)
	defer cancel()
	res, resp, err := f.api.OpenFgaApi.WriteAuthorizationModel(cctx, f.storeID).Body(body).Execute()
	if err != nil {
		return "", f.sdkErr(ctx, "write model", resp, err)
	}
	f.mu.Lock()
	f.modelID, f.modelAt = res.AuthorizationModelId, time.Now()
	if f.cfg.ModelID != "" {
		f.pinned = true // the caller pinned models: keep pinning, to this one
	}
	f.mu.Unlock()
	return res.AuthorizationModelId, nil
}

// WriteTuples writes tuples in calls of at most 100, in order. Tuples
// that already exist are skipped, so a file can be written again. It
// stops at the first failing call: earlier calls stay written.
func (f *FGA) WriteTuples(ctx context.Context, tuples []Tuple) error {
	return f.writeTuples(ctx, tuples, false)
}

// DeleteTuples deletes tuples in calls of at most 100, in order. Tuples
// that do not exist are skipped.
func (f *FGA) DeleteTuples(ctx context.Context, tuples []Tuple) error {
	return f.writeTuples(ctx, tuples, true)
}

type tupleKeyJSON struct {
	User      string          `json:"user"`
	Relation  string          `json:"relation"`
	Object    string          `json:"object"`
	Condition *TupleCondition `json:"condition,omitempty"`
}

type writeRequestJSON struct {
	Writes *struct {
		TupleKeys   []tupleKeyJSON `json:"tuple_keys"`
		OnDuplicate string         `json:"on_duplicate,omitempty"`
	} `json:"writes,omitempty"`
	Deletes *struct {
		TupleKeys []tupleKeyJSON `json:"tuple_keys"`
		OnMissing string         `json:"on_missing,omitempty"`
	} `json:"deletes,omitempty"`
	AuthorizationModelID string `json:"authorization_model_id,omitempty"`
}

func (f *FGA) writeTuples(ctx context.Context, tuples []Tuple, del bool) error {
	if len(tuples) == 0 {
		return nil
	}
	for i, t := range tuples {
		if err := t.validate(); err != nil {
			return fmt.Errorf("tuple %d (%s): %v: %w", i+1, t, err, ErrFGAInvalid)
		}
	}
	model, err := f.model(ctx)
	if err != nil {
		return err
	}
	op := "write tuples"
	if del {
		op = "delete tuples"
	}
	// The write endpoint is called directly: the SDK (v0.6.3) cannot ask
	// OpenFGA to ignore duplicates and missing tuples.
	for start := 0; start < len(tuples); start += fgaMaxTuplesWrite {
		chunk := tuples[start:min(start+fgaMaxTuplesWrite, len(tuples))]
		keys := make([]tupleKeyJSON, len(chunk))
		for i, t := range chunk {
			keys[i] = tupleKeyJSON{User: t.User, Relation: t.Relation, Object: t.Object, Condition: t.Condition}
			if del {
				keys[i].Condition = nil
			}
		}
		req := writeRequestJSON{AuthorizationModelID: model}
		if del {
			req.Deletes = &struct {
				TupleKeys []tupleKeyJSON `json:"tuple_keys"`
				OnMissing string         `json:"on_missing,omitempty"`
			}{keys, "ignore"}
		} else {
			req.Writes = &struct {
				TupleKeys   []tupleKeyJSON `json:"tuple_keys"`
				OnDuplicate string         `json:"on_duplicate,omitempty"`
			}{keys, "ignore"}
		}
		if err := f.post(ctx, op, "/stores/"+url.PathEscape(f.storeID)+"/write", req, nil); err != nil {
			if start > 0 {
				return fmt.Errorf("%w (the first %d tuples were done)", err, start)
			}
			return err
		}
	}
	return nil
}

func (t Tuple) validate() error {
	switch {
	case t.User == "" || t.Relation == "" || t.Object == "":
		return errors.New("user, relation and object are required")
	case !strings.Contains(t.User, ":"):
		return fmt.Errorf("user %q: want type:id, type:id#relation or type:*", t.User)
	case !strings.Contains(t.Object, ":"):
		return fmt.Errorf("object %q: want type:id", t.Object)
	case t.Condition != nil && t.Condition.Name == "":
		return errors.New("condition without a name")
	}
	return nil
}

// ParseTuples reads a tuple file in one of the fga CLI's formats, chosen
// by name's extension: .yaml/.yml or .json (a list of {user, relation,
// object, condition: {name, context}}), .jsonl (one such object a line),
// or .csv with the header
// user_type,user_id,user_relation,relation,object_type,object_id,condition_name,condition_context
// (user_relation and the condition columns optional; condition_context
// is a JSON object).
func ParseTuples(name string, data []byte) ([]Tuple, error) {
	var tuples []Tuple
	var err error
	switch ext := strings.ToLower(path.Ext(name)); ext {
	case ".yaml", ".yml":
		err = yaml.Unmarshal(data, &tuples)
	case ".json":
		err = json.Unmarshal(data, &tuples)
	case ".jsonl":
		tuples, err = parseTuplesJSONL(data)
	case ".csv":
		tuples, err = parseTuplesCSV(data)
	default:
		return nil, fmt.Errorf("%s: unknown tuple file format %q: use .yaml, .yml, .json, .jsonl or .csv", name, ext)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(tuples) == 0 {
		return nil, fmt.Errorf("%s: no tuples", name)
	}
	for i, t := range tuples {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("%s: tuple %d: %w", name, i+1, err)
		}
	}
	return tuples, nil
}

func parseTuplesJSONL(data []byte) ([]Tuple, error) {
	var tuples []Tuple
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var t Tuple
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		tuples = append(tuples, t)
	}
	return tuples, sc.Err()
}

func parseTuplesCSV(data []byte) ([]Tuple, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		switch h {
		case "user_type", "user_id", "user_relation", "relation", "object_type", "object_id", "condition_name", "condition_context":
			col[h] = i
		default:
			return nil, fmt.Errorf("csv header %q: valid headers are user_type,user_id,user_relation,relation,object_type,object_id,condition_name,condition_context", h)
		}
	}
	for _, h := range []string{"user_type", "user_id", "relation", "object_type", "object_id"} {
		if _, ok := col[h]; !ok {
			return nil, fmt.Errorf("csv header: missing %q", h)
		}
	}
	if _, ok := col["condition_context"]; ok {
		if _, ok := col["condition_name"]; !ok {
			return nil, errors.New(`csv header: "condition_context" needs "condition_name"`)
		}
	}
	var tuples []Tuple
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return tuples, nil
		}
		if err != nil {
			return nil, err
		}
		get := func(h string) string {
			if i, ok := col[h]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		t := Tuple{
			User:     get("user_type") + ":" + get("user_id"),
			Relation: get("relation"),
			Object:   get("object_type") + ":" + get("object_id"),
		}
		if ur := get("user_relation"); ur != "" {
			t.User += "#" + ur
		}
		if cn := get("condition_name"); cn != "" {
			t.Condition = &TupleCondition{Name: cn}
			if cc := get("condition_context"); cc != "" {
				if err := json.Unmarshal([]byte(cc), &t.Condition.Context); err != nil {
					return nil, fmt.Errorf("line %d: condition_context: %w", line, err)
				}
			}
		}
		tuples = append(tuples, t)
	}
}

// Check reports whether user has relation on object.
func (f *FGA) Check(ctx context.Context, user, relation, object string, c Consistency) (bool, error) {
	return f.CheckWith(ctx, user, relation, object, FGAOptions{Consistency: c})
}

// CheckWith is Check with a condition context and contextual tuples.
func (f *FGA) CheckWith(ctx context.Context, user, relation, object string, o FGAOptions) (bool, error) {
	cons, err := consistency(o.Consistency)
	if err != nil {
		return false, err
	}
	model, err := f.model(ctx)
	if err != nil {
		return false, err
	}
	body := openfga.CheckRequest{
		TupleKey:             openfga.CheckRequestTupleKey{User: user, Relation: relation, Object: object},
		AuthorizationModelId: &model,
		Consistency:          cons,
		ContextualTuples:     sdkContextual(o.ContextualTuples),
	}
	if o.Context != nil {
		body.Context = &o.Context
	}
	cctx, cancel := f.callCtx(ctx)
	defer cancel()
	res, resp, err := f.api.OpenFgaApi.Check(cctx, f.storeID).Body(body).Execute()
	if err != nil {
		return false, f.sdkErr(ctx, "check", resp, err)
	}
	if res.Allowed == nil {
		return false, fmt.Errorf("OpenFGA at %s answered check without a result: %w", f.base, ErrFGAUnavailable)
	}
	return *res.Allowed, nil
}

type batchCheckItemJSON struct {
	TupleKey         tupleKeyJSON `json:"tuple_key"`
	ContextualTuples *struct {
		TupleKeys []tupleKeyJSON `json:"tuple_keys"`
	} `json:"contextual_tuples,omitempty"`
	Context       map[string]any `json:"context,omitempty"`
	CorrelationID string         `json:"correlation_id"`
}

type batchCheckRequestJSON struct {
	Checks               []batchCheckItemJSON `json:"checks"`
	AuthorizationModelID string               `json:"authorization_model_id,omitempty"`
	Consistency          string               `json:"consistency,omitempty"`
}

type batchCheckResponseJSON struct {
	Result map[string]struct {
		Allowed *bool `json:"allowed"`
		Error   *struct {
			InputError    any    `json:"input_error"`
			InternalError any    `json:"internal_error"`
			Message       string `json:"message"`
		} `json:"error"`
	} `json:"result"`
}

// BatchCheck reports for each object whether user has relation on it,
// with OpenFGA's server-side /batch-check: calls of at most 50 checks
// with correlation ids "0".."49", up to 8 calls in flight. Any error —
// a failed call, a per-check error, a missing result — is an error and
// no partial answer is returned.
func (f *FGA) BatchCheck(ctx context.Context, user, relation string, objects []string, c Consistency) (map[string]bool, error) {
	return f.BatchCheckWith(ctx, user, relation, objects, FGAOptions{Consistency: c})
}

// BatchCheckWith is BatchCheck with a condition context and contextual
// tuples, applied to every check.
func (f *FGA) BatchCheckWith(ctx context.Context, user, relation string, objects []string, o FGAOptions) (map[string]bool, error) {
	cons, err := consistency(o.Consistency)
	if err != nil {
		return nil, err
	}
	uniq := make([]string, 0, len(objects))
	seen := make(map[string]bool, len(objects))
	for _, obj := range objects {
		if !seen[obj] {
			seen[obj] = true
			uniq = append(uniq, obj)
		}
	}
	if len(uniq) == 0 {
		return map[string]bool{}, nil
	}
	model, err := f.model(ctx)
	if err != nil {
		return nil, err
	}
	var ctxTuples *struct {
		TupleKeys []tupleKeyJSON `json:"tuple_keys"`
	}
	if len(o.ContextualTuples) > 0 {
		ctxTuples = &struct {
			TupleKeys []tupleKeyJSON `json:"tuple_keys"`
		}{}
		for _, t := range o.ContextualTuples {
			ctxTuples.TupleKeys = append(ctxTuples.TupleKeys, tupleKeyJSON{User: t.User, Relation: t.Relation, Object: t.Object, Condition: t.Condition})
		}
	}
	out := make(map[string]bool, len(uniq))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fgaBatchParallel)
	for start := 0; start < len(uniq); start += fgaMaxBatchChecks {
		chunk := uniq[start:min(start+fgaMaxBatchChecks, len(uniq))]
		g.Go(func() error {
			req := batchCheckRequestJSON{AuthorizationModelID: model}
			if cons != nil {
				req.Consistency = string(*cons)
			}
			for i, obj := range chunk {
				req.Checks = append(req.Checks, batchCheckItemJSON{
					TupleKey:         tupleKeyJSON{User: user, Relation: relation, Object: obj},
					ContextualTuples: ctxTuples,
					Context:          o.Context,
					CorrelationID:    strconv.Itoa(i),
				})
			}
			var res batchCheckResponseJSON
			if err := f.post(gctx, "batch-check", "/stores/"+url.PathEscape(f.storeID)+"/batch-check", req, &res); err != nil {
				return err
			}
			got := make(map[string]bool, len(chunk))
			for i, obj := range chunk {
				r, ok := res.Result[strconv.Itoa(i)]
				switch {
				case !ok:
					return fmt.Errorf("OpenFGA at %s answered batch-check without a result for %s %s %s: %w", f.base, user, relation, obj, ErrFGAUnavailable)
				case r.Error != nil:
					kind := ErrFGAUnavailable
					if r.Error.InputError != nil && r.Error.InputError != "" {
						kind = ErrFGAInvalid
					}
					return fmt.Errorf("OpenFGA could not check %s %s %s: %s: %w", user, relation, obj, r.Error.Message, kind)
				case r.Allowed == nil:
					return fmt.Errorf("OpenFGA at %s answered batch-check without a decision for %s %s %s: %w", f.base, user, relation, obj, ErrFGAUnavailable)
				}
				got[obj] = *r.Allowed
			}
			mu.Lock()
			for k, v := range got {
				out[k] = v
			}
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// ListObjects lists up to max objects of type typ on which user has
// relation (max ≤ 0: as many as OpenFGA returns). OpenFGA stops at its
// result cap (ListObjectsMax) and at its deadline (ListObjectsDeadline)
// and then answers with what it found: truncated is true when the answer
// reached the cap, took as long as the deadline, or was cut to max. An
// answer that does not come within ListObjectsTimeout is an error.
func (f *FGA) ListObjects(ctx context.Context, user, relation, typ string, max int, c Consistency) ([]string, bool, error) {
	return f.ListObjectsWith(ctx, user, relation, typ, max, FGAOptions{Consistency: c})
}

// ListObjectsWith is ListObjects with a condition context and contextual
// tuples.
func (f *FGA) ListObjectsWith(ctx context.Context, user, relation, typ string, max int, o FGAOptions) ([]string, bool, error) {
	cons, err := consistency(o.Consistency)
	if err != nil {
		return nil, false, err
	}
	model, err := f.model(ctx)
	if err != nil {
		return nil, false, err
	}
	body := openfga.ListObjectsRequest{
		AuthorizationModelId: &model,
		Type:                 typ,
		Relation:             relation,
		User:                 user,
		Consistency:          cons,
		ContextualTuples:     sdkContextual(o.ContextualTuples),
	}
	if o.Context != nil {
		body.Context = &o.Context
	}
	cctx, cancel := context.WithTimeout(ctx, f.cfg.ListObjectsTimeout)
	defer cancel()
	start := time.Now()
	res, resp, err := f.api.OpenFgaApi.ListObjects(cctx, f.storeID).Body(body).Execute()
	if err != nil {
		return nil, false, f.sdkErrWithin(ctx, "list-objects", resp, err, f.cfg.ListObjectsTimeout)
	}
	objs := res.Objects
	truncated := len(objs) >= f.cfg.ListObjectsMax || time.Since(start) >= f.cfg.ListObjectsDeadline
	sort.Strings(objs)
	if max > 0 && len(objs) > max {
		objs, truncated = objs[:max], true
	}
	return objs, truncated, nil
}

// ListUsers lists the users of one type that have relation on object:
// filter is a type ("user") or a userset type ("group#member"). Users
// come back as "type:id", "type:id#relation" or "type:*".
func (f *FGA) ListUsers(ctx context.Context, object, relation, filter string, o FGAOptions) ([]string, error) {
	cons, err := consistency(o.Consistency)
	if err != nil {
		return nil, err
	}
	typ, id, ok := strings.Cut(object, ":")
	if !ok {
		return nil, fmt.Errorf("object %q: want type:id: %w", object, ErrFGAInvalid)
	}
	model, err := f.model(ctx)
	if err != nil {
		return nil, err
	}
	body := openfga.ListUsersRequest{
		AuthorizationModelId: &model,
		Object:               openfga.FgaObject{Type: typ, Id: id},
		Relation:             relation,
		Consistency:          cons,
	}
	ft, frel, _ := strings.Cut(filter, "#")
	uf := openfga.UserTypeFilter{Type: ft}
	if frel != "" {
		uf.Relation = &frel
	}
	body.UserFilters = []openfga.UserTypeFilter{uf}
	if ct := sdkContextual(o.ContextualTuples); ct != nil {
		body.ContextualTuples = &ct.TupleKeys
	}
	if o.Context != nil {
		body.Context = &o.Context
	}
	cctx, cancel := f.callCtx(ctx)
	defer cancel()
	res, resp, err := f.api.OpenFgaApi.ListUsers(cctx, f.storeID).Body(body).Execute()
	if err != nil {
		return nil, f.sdkErr(ctx, "list-users", resp, err)
	}
	users := make([]string, 0, len(res.Users))
	for _, u := range res.Users {
		switch {
		case u.Object != nil:
			users = append(users, u.Object.Type+":"+u.Object.Id)
		case u.Userset != nil:
			users = append(users, u.Userset.Type+":"+u.Userset.Id+"#"+u.Userset.Relation)
		case u.Wildcard != nil:
			users = append(users, u.Wildcard.Type+":*")
		}
	}
	sort.Strings(users)
	return users, nil
}

func consistency(c Consistency) (*openfga.ConsistencyPreference, error) {
	switch c {
	case ConsistencyDefault:
		return nil, nil
	case MinimizeLatency, HigherConsistency:
		p := openfga.ConsistencyPreference(c)
		return &p, nil
	}
	return nil, fmt.Errorf("consistency %q: want %q, %q or empty: %w", c, MinimizeLatency, HigherConsistency, ErrFGAInvalid)
}

func sdkContextual(ts []Tuple) *openfga.ContextualTupleKeys {
	if len(ts) == 0 {
		return nil
	}
	keys := make([]openfga.TupleKey, len(ts))
	for i, t := range ts {
		keys[i] = openfga.TupleKey{User: t.User, Relation: t.Relation, Object: t.Object}
		if t.Condition != nil {
			keys[i].Condition = &openfga.RelationshipCondition{Name: t.Condition.Name}
			if t.Condition.Context != nil {
				keys[i].Condition.Context = &t.Condition.Context
			}
		}
	}
	return &openfga.ContextualTupleKeys{TupleKeys: keys}
}

func (f *FGA) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, f.cfg.Timeout)
}

// post calls an OpenFGA endpoint the SDK does not serve well, with the
// same credentials, and decodes the answer into out (when not nil).
func (f *FGA) post(ctx context.Context, op, p string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s: %v: %w", op, err, ErrFGAInvalid)
	}
	cctx, cancel := f.callCtx(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, f.base+p, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %v: %w", op, err, ErrFGAInvalid)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "agentauth")
	resp, err := f.hc.Do(req)
	if err != nil {
		return f.transportErr(ctx, op, err, f.cfg.Timeout)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, fgaMaxResponseBody))
	if err != nil {
		return f.transportErr(ctx, op, err, f.cfg.Timeout)
	}
	if resp.StatusCode >= 300 {
		return f.statusErr(op, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("OpenFGA at %s answered %s with something that is not its JSON (%v): is the URL right? %w", f.base, op, err, ErrFGAUnavailable)
	}
	return nil
}

// sdkErr turns an SDK call's failure into an error that says what to do.
func (f *FGA) sdkErr(ctx context.Context, op string, resp *http.Response, err error) error {
	return f.sdkErrWithin(ctx, op, resp, err, f.cfg.Timeout)
}

// sdkErrWithin is sdkErr for a call bounded by timeout.
func (f *FGA) sdkErrWithin(ctx context.Context, op string, resp *http.Response, err error, timeout time.Duration) error {
	if resp != nil && resp.StatusCode >= 300 {
		var data []byte
		if resp.Body != nil {
			data, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		}
		return f.statusErr(op, resp.StatusCode, data)
	}
	if resp != nil {
		return fmt.Errorf("OpenFGA at %s answered %s with something unexpected (%v): is the URL right? %w", f.base, op, err, ErrFGAUnavailable)
	}
	return f.transportErr(ctx, op, err, timeout)
}

func (f *FGA) transportErr(ctx context.Context, op string, err error, timeout time.Duration) error {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("OpenFGA %s: %w", op, ctx.Err())
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("OpenFGA at %s did not answer %s within %s: is it overloaded or stuck? %w: %w", f.base, op, timeout, context.DeadlineExceeded, ErrFGAUnavailable)
	}
	return fmt.Errorf("OpenFGA at %s is not reachable (%s): %v: is it running, and is the URL (--openfga-url) right? %w", f.base, op, unwrapURLError(err), ErrFGAUnavailable)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (f *FGA) statusErr(op string, status int, body []byte) error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	msg := e.Message
	if msg == "" {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	if e.Code == "latest_authorization_model_not_found" || e.Code == "authorization_model_not_found" {
		return f.noModel()
	}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("OpenFGA at %s refused the credentials for %s (HTTP %d: %s): give an API token (--api-token) or client credentials that it accepts: %w", f.base, op, status, msg, ErrFGAUnauthorized)
	case status == http.StatusNotFound && (e.Code == "store_id_not_found" || strings.Contains(msg, "store")):
		return fmt.Errorf("OpenFGA at %s has no store %s (%s): check --store or create it: %w", f.base, f.storeID, msg, ErrFGAInvalid)
	case status == http.StatusNotFound || status == http.StatusNotImplemented:
		return fmt.Errorf("OpenFGA at %s does not serve %s (HTTP %d: %s): is it OpenFGA ≥ 1.8, and is the URL right? %w", f.base, op, status, msg, ErrFGAUnavailable)
	case status == http.StatusTooManyRequests:
		return fmt.Errorf("OpenFGA at %s is rate limiting %s: %s: %w", f.base, op, msg, ErrFGAUnavailable)
	case status >= 500:
		return fmt.Errorf("OpenFGA at %s failed %s (HTTP %d: %s): %w", f.base, op, status, msg, ErrFGAUnavailable)
	case status >= 400:
		return fmt.Errorf("OpenFGA rejected %s: %s (%s): %w", op, msg, e.Code, ErrFGAInvalid)
	}
	return fmt.Errorf("OpenFGA at %s answered %s with HTTP %d: %w", f.base, op, status, ErrFGAUnavailable)
}

// fgaHTTPClient is c.HTTPClient (or a new client) carrying c's
// credentials. The SDK ignores its own credentials when given a client,
// so they are added here, for the SDK and the direct calls alike.
func fgaHTTPClient(c FGAConfig) (*http.Client, error) {
	base := c.HTTPClient
	if base == nil {
		base = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	switch {
	case c.APIToken != "" && c.ClientID != "":
		return nil, fmt.Errorf("OpenFGA credentials: give an API token or client credentials, not both: %w", ErrFGAInvalid)
	case c.APIToken != "":
		hc := *base
		hc.Transport = bearerTransport{token: c.APIToken, next: transportOf(base)}
		return &hc, nil
	case c.ClientID != "" || c.ClientSecret != "" || c.TokenIssuer != "":
		if c.ClientID == "" || c.ClientSecret == "" || c.TokenIssuer == "" {
			return nil, fmt.Errorf("OpenFGA client credentials need a client id, a client secret and a token issuer: %w", ErrFGAInvalid)
		}
		tokenURL := c.TokenIssuer
		if !strings.Contains(tokenURL, "://") {
			tokenURL = "https://" + tokenURL
		}
		u, err := url.Parse(tokenURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("OpenFGA token issuer %q: want a host or an http(s) URL: %w", c.TokenIssuer, ErrFGAInvalid)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/oauth/token"
		}
		cc := clientcredentials.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, TokenURL: u.String()}
		if c.Audience != "" {
			cc.EndpointParams = url.Values{"audience": {c.Audience}}
		}
		ts := cc.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, base))
		hc := *base
		hc.Transport = &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, ts), Base: transportOf(base)}
		return &hc, nil
	}
	return base, nil
}

func transportOf(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.next.RoundTrip(r)
}
