package bus

import "testing"

func TestGate(t *testing.T) {
	g := newGate()
	if !g.enter() || !g.enter() {
		t.Fatal("an open gate refused a request")
	}
	g.hold() // work handed on by the first
	g.leave()
	g.close()
	g.close() // idempotent
	if g.enter() {
		t.Fatal("a closed gate admitted a request")
	}
	for i := range 2 {
		select {
		case <-g.idle:
			t.Fatalf("idle with %d still in flight", 2-i)
		default:
		}
		g.leave()
	}
	select {
	case <-g.idle:
	default:
		t.Fatal("not idle once the last request left")
	}

	empty := newGate()
	empty.close()
	select {
	case <-empty.idle:
	default:
		t.Fatal("a gate closed with nothing in flight is not idle")
	}
}
