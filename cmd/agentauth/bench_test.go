package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
)

// TestBenchCommand runs every benchmark scenario briefly: each runs
// against its limit without errors. Timings are not checked.
func TestBenchCommand(t *testing.T) {
	var out bytes.Buffer
	f := &benchFlags{scenarios: scenarioNames(), n: 50, warmup: 10, concurrency: []int{1, 2}, rounds: 1, jsonOut: true, sync: "2m", agent: "bench-agent", noProgress: true}
	if err := runBench(context.Background(), &out, io.Discard, f); err != nil {
		t.Fatal(err)
	}
	var rs []BenchResult
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got, want := len(rs), 2*len(scenarioNames()); got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, r := range rs {
		if r.Op.Errors != 0 || r.Baseline.Errors != 0 || r.Op.Throughput <= 0 || r.Baseline.Throughput <= 0 || r.P50Ratio <= 0 {
			t.Errorf("%s c=%d: %+v", r.Scenario, r.Concurrency, r)
		}
	}
	// The same through a separate load process (this test binary acting
	// as agentauth bench-load).
	out.Reset()
	f.scenarios, f.loadProcess, f.concurrency = []string{"sys.info", "user.whoami"}, true, []int{2}
	if err := runBench(context.Background(), &out, io.Discard, f); err != nil {
		t.Fatal(err)
	}
	rs = nil
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil || len(rs) != 2 {
		t.Fatalf("load process results: %v\n%s", err, out.String())
	}
	for _, r := range rs {
		if r.Op.Errors != 0 || r.Baseline.Errors != 0 || r.Op.Throughput <= 0 || r.Baseline.Throughput <= 0 {
			t.Errorf("load process %s: %+v", r.Scenario, r)
		}
	}
	f.scenarios = []string{"nope"}
	if err := runBench(context.Background(), io.Discard, io.Discard, f); err == nil {
		t.Error("unknown scenario accepted")
	}
}
