package main

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// countBar is the progress bar of an operator's long operation: a count
// of total, drawn on w only when w is a terminal; nil when off (a nil bar
// is what callers check before using it).
func countBar(w io.Writer, total int, desc string, off bool) *progressbar.ProgressBar {
	if off || total <= 0 {
		return nil
	}
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish(),
		progressbar.OptionSetVisibility(isTerminal(w)))
}

// barProgress draws progress(done, total) callbacks (vault.RotateKey,
// retrieval.Service.Reindex) as a countBar made on the first call.
type barProgress struct {
	w    io.Writer
	desc string
	off  bool
	bar  *progressbar.ProgressBar
}

func (b *barProgress) update(done, total int) {
	if b.bar == nil {
		b.bar = countBar(b.w, total, b.desc, b.off)
	}
	if b.bar != nil {
		_ = b.bar.Set(done)
	}
}

func (b *barProgress) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
	}
}
