package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	grpc_ctxtags "github.com/grpc-ecosystem/go-grpc-middleware/tags"
	grpc_recovery "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	grpc_runtime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	openfgav1 "github.com/openfga/api/proto/openfga/v1"
	"github.com/openfga/openfga/pkg/gateway"
	"github.com/openfga/openfga/pkg/logger"
	"github.com/openfga/openfga/pkg/middleware"
	httpmiddleware "github.com/openfga/openfga/pkg/middleware/http"
	"github.com/openfga/openfga/pkg/middleware/recovery"
	"github.com/openfga/openfga/pkg/middleware/requestid"
	"github.com/openfga/openfga/pkg/middleware/storeid"
	"github.com/openfga/openfga/pkg/middleware/validator"
	"github.com/openfga/openfga/pkg/server"
	serverErrors "github.com/openfga/openfga/pkg/server/errors"
	"github.com/openfga/openfga/pkg/server/health"
	"github.com/openfga/openfga/pkg/storage/migrate"
	"github.com/openfga/openfga/pkg/storage/sqlcommon"
	"github.com/openfga/openfga/pkg/storage/sqlite"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthv1pb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// The embedded OpenFGA's settings. retrieval.FGA's ListObjectsMax,
// ListObjectsDeadline and ListObjectsTimeout must be the first three
// (Config.fgaConfig sets them for the embedded instance): change them
// together.
const (
	// OpenFGA answers ListObjects with what it found after this long, or
	// at this many objects; FGA reports such answers as truncated.
	openFGAListObjectsDeadline = 3 * time.Second
	// 10,000 (OpenFGA's default is 1,000) so that a person permitted on
	// up to 10,000 documents of a type is served by the pre-filter.
	openFGAListObjectsMax = 10000
	// Every request is cut off after this long (gRPC timeout interceptor
	// and the server's own upstream timeout). Longer than the ListObjects
	// deadline so that ListObjects returns its partial answer instead of
	// an error; the client waits as long for ListObjects (its
	// ListObjectsTimeout).
	openFGARequestTimeout = openFGAListObjectsDeadline + 2*time.Second
	// /batch-check limits: retrieval sends chunks of 50.
	openFGAMaxChecksPerBatch = 50
	// sqlite waits this long for a competing writer (the CLI writing
	// tuples while the service checks) instead of failing at once.
	openFGASQLiteBusyTimeoutMs = 5000
)

var openFGAMigrateMu sync.Mutex

func openFGADir(dataDir string) string { return filepath.Join(dataDir, "openfga") }

// startOpenFGA runs OpenFGA in this process: its pkg/server on the sqlite
// datastore <data-dir>/openfga/openfga.db (migrated on start), served by
// an in-memory gRPC server behind OpenFGA's grpc-gateway HTTP API on a
// loopback port chosen by the OS. The API requires the bearer token in
// <data-dir>/openfga/token (generated on first start, 0600; see
// readOpenFGAToken). stop shuts it down gracefully and is safe to call
// more than once.
func startOpenFGA(dataDir string, log *slog.Logger) (url string, stop func(), err error) {
	dir := openFGADir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("openfga: %w", err)
	}
	token, err := loadOrCreateOpenFGAToken(dir)
	if err != nil {
		return "", nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	zl := &logger.ZapLogger{Logger: zap.New(&slogCore{log: log.With("component", "openfga"), min: zapcore.WarnLevel})}
	dbPath := filepath.Join(dir, "openfga.db")
	uri := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)", dbPath, openFGASQLiteBusyTimeoutMs)
	openFGAMigrateMu.Lock() // goose, which migrates, keeps its settings in globals
	err = migrate.RunMigrations(migrate.MigrationConfig{
		Engine: "sqlite", URI: uri, Timeout: 30 * time.Second, PingTimeout: 5 * time.Second, Logger: zl,
	})
	openFGAMigrateMu.Unlock()
	if err != nil {
		return "", nil, fmt.Errorf("openfga: migrating %s: %w", dbPath, err)
	}

	var cleanups []func()
	cleanup := func() {
		for _, c := range slices.Backward(cleanups) {
			c()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()

	// sqlite.New leaves database/sql's default of 2 idle connections, so
	// most checks of a batch would open a connection (pragmas, schema)
	// anew: keep enough idle ones for a batch-check's parallelism. Each
	// connection keeps its prepared queries (sqlitestmt.go).
	dsn, err := sqlite.PrepareDSN(uri)
	if err != nil {
		return "", nil, fmt.Errorf("openfga: %s: %w", dbPath, err)
	}
	db, err := openSQLiteWithStmtCache(dsn)
	if err != nil {
		return "", nil, fmt.Errorf("openfga: opening %s: %w", dbPath, err)
	}
	db.SetMaxIdleConns(64)
	ds, err := sqlite.NewWithDB(db, sqlcommon.NewConfig(
		sqlcommon.WithLogger(zl),
		sqlcommon.WithMaxTuplesPerWrite(100),
		sqlcommon.WithMaxTypesPerAuthorizationModel(100),
	))
	if err != nil {
		db.Close()
		return "", nil, fmt.Errorf("openfga: opening %s: %w", dbPath, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cleanups = append(cleanups, cancel)
	svr, err := server.NewServerWithOpts(
		server.WithDatastore(ds),
		server.WithContext(ctx),
		server.WithLogger(zl),
		// Sets HTTP status codes (201 on create) through gRPC headers, as
		// openfga run does.
		server.WithTransport(gateway.NewRPCTransport(zl)),
		server.WithListObjectsDeadline(openFGAListObjectsDeadline),
		server.WithListObjectsMaxResults(openFGAListObjectsMax),
		server.WithListUsersDeadline(openFGAListObjectsDeadline),
		server.WithListUsersMaxResults(openFGAListObjectsMax),
		server.WithMaxChecksPerBatchCheck(openFGAMaxChecksPerBatch),
		server.WithMaxConcurrentChecksPerBatchCheck(openFGAMaxChecksPerBatch),
		server.WithRequestTimeout(openFGARequestTimeout),
		// Caches off: a tuple written or deleted is seen by the very next
		// check, whatever its consistency preference; sqlite on the same
		// machine answers fast enough without them.
		server.WithCheckQueryCacheEnabled(false),
		server.WithCheckIteratorCacheEnabled(false),
		server.WithListObjectsIteratorCacheEnabled(false),
		server.WithCacheControllerEnabled(false),
	)
	if err != nil {
		ds.Close()
		return "", nil, fmt.Errorf("openfga: %w", err)
	}
	cleanups = append(cleanups, svr.Close) // closes the datastore too

	timeout := middleware.NewTimeoutInterceptor(openFGARequestTimeout, zl)
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			grpc_recovery.UnaryServerInterceptor(grpc_recovery.WithRecoveryHandlerContext(recovery.PanicRecoveryHandler(zl))),
			grpc_ctxtags.UnaryServerInterceptor(),
			requestid.NewUnaryInterceptor(),
			timeout.NewUnaryTimeoutInterceptor(),
			storeid.NewUnaryInterceptor(),
			validator.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			grpc_recovery.StreamServerInterceptor(grpc_recovery.WithRecoveryHandlerContext(recovery.PanicRecoveryHandler(zl))),
			grpc_ctxtags.StreamServerInterceptor(),
			requestid.NewStreamingInterceptor(),
			timeout.NewStreamTimeoutInterceptor(),
			validator.StreamServerInterceptor(),
			storeid.NewStreamingInterceptor(),
		),
	)
	openfgav1.RegisterOpenFGAServiceServer(gs, svr)
	healthv1pb.RegisterHealthServer(gs, &health.Checker{TargetService: svr, TargetServiceName: openfgav1.OpenFGAService_ServiceDesc.ServiceName})
	// The gateway reaches gRPC through memory: no second port.
	bl := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(bl) }()
	cleanups = append(cleanups, func() { gracefulStopGRPC(gs, 10*time.Second) })
	conn, err := grpc.NewClient("passthrough:///openfga",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", nil, fmt.Errorf("openfga: %w", err)
	}
	cleanups = append(cleanups, func() { _ = conn.Close() })

	mux := grpc_runtime.NewServeMux(
		grpc_runtime.WithForwardResponseOption(httpmiddleware.HTTPResponseModifier),
		// OpenFGA's error handler: without it validation errors come out
		// as internal errors with the wrong HTTP status.
		grpc_runtime.WithErrorHandler(func(c context.Context, _ *grpc_runtime.ServeMux, _ grpc_runtime.Marshaler, w http.ResponseWriter, r *http.Request, e error) {
			code := serverErrors.ConvertToEncodedErrorCode(status.Convert(e))
			httpmiddleware.CustomHTTPErrorHandler(c, w, r, serverErrors.NewEncodedError(code, e.Error()))
		}),
		grpc_runtime.WithStreamErrorHandler(func(_ context.Context, e error) *status.Status {
			code := serverErrors.ConvertToEncodedErrorCode(status.Convert(e))
			return status.Convert(serverErrors.NewEncodedError(code, e.Error()))
		}),
		grpc_runtime.WithHealthzEndpoint(healthv1pb.NewHealthClient(conn)),
		grpc_runtime.WithOutgoingHeaderMatcher(func(s string) (string, bool) { return s, true }),
	)
	if err := openfgav1.RegisterOpenFGAServiceHandler(ctx, mux, conn); err != nil {
		return "", nil, fmt.Errorf("openfga: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("openfga: listening on a loopback port: %w", err)
	}
	hs := &http.Server{
		Handler:           recovery.HTTPPanicRecoveryHandler(requireBearer(token, mux), zl),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("openfga HTTP API stopped", "err", err)
		}
	}()
	url = "http://" + ln.Addr().String()
	cleanups = append(cleanups, func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = hs.Shutdown(sctx)
		// Leave no pointer to a port that another process may take.
		if u, err := readOpenFGAURL(dataDir); err == nil && u == url {
			_ = os.Remove(filepath.Join(dir, "url"))
		}
	})
	log.Info("openfga started", "url", url, "db", dbPath)
	return url, sync.OnceFunc(cleanup), nil
}

func gracefulStopGRPC(gs *grpc.Server, wait time.Duration) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		gs.Stop()
	}
}

// requireBearer lets through requests that carry the token (and the
// health check).
func requireBearer(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"the embedded OpenFGA needs its bearer token, from <data-dir>/openfga/token"}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func loadOrCreateOpenFGAToken(dir string) (string, error) {
	p := filepath.Join(dir, "token")
	b, err := os.ReadFile(p)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("openfga token: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	t := hex.EncodeToString(raw[:])
	if err := writeFileAtomic(p, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("openfga token: %w", err)
	}
	return t, nil
}

// readOpenFGAToken is the embedded OpenFGA's API token (give it to
// retrieval.FGAConfig.APIToken).
func readOpenFGAToken(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(openFGADir(dataDir), "token"))
	if err != nil {
		return "", fmt.Errorf("openfga token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeOpenFGAURL records where the running service's embedded OpenFGA
// listens, for the fga commands.
func writeOpenFGAURL(dataDir, url string) error {
	dir := openFGADir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "url"), []byte(url+"\n"), 0o600)
}

// readOpenFGAURL is the URL writeOpenFGAURL recorded (fs.ErrNotExist
// when there is none).
func readOpenFGAURL(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(openFGADir(dataDir), "url"))
	if err != nil {
		return "", err
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fs.ErrNotExist
	}
	return u, nil
}

func writeFileAtomic(p string, b []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// slogCore sends OpenFGA's zap logs to slog.
type slogCore struct {
	log    *slog.Logger
	min    zapcore.Level
	fields []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, min: c.min, fields: append(slices.Clip(c.fields), fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	lvl := slog.LevelError
	switch e.Level {
	case zapcore.DebugLevel:
		lvl = slog.LevelDebug
	case zapcore.InfoLevel:
		lvl = slog.LevelInfo
	case zapcore.WarnLevel:
		lvl = slog.LevelWarn
	}
	c.log.LogAttrs(context.Background(), lvl, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
