package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/decide"
	"otabox/appliance/device"
	"otabox/appliance/policy"
	"otabox/appliance/store"
	"otabox/appliance/web"
)

// images are the catalog's file paths, the names a policy may use.
func images(cat *catalog.Catalog) []string {
	var out []string
	for _, e := range cat.Files() {
		out = append(out, e.Path)
	}
	// Files still being read count as present: the catalog as it will be.
	// A rule naming one answers 503 with Retry-After until it is read
	// (decide), and fails closed if it turns out not to be an image.
	return append(out, cat.PendingPaths()...)
}

// loadPolicy reads the policy file against the catalog in force and
// makes its rollouts watch their failures in the store.
func (a *Appliance) loadPolicy() (*policy.Policy, error) {
	p, err := policy.Load(a.cfg.Policy, images(a.h.Catalog()))
	if err != nil {
		return nil, err
	}
	p.Watch(a.rolloutStats, func(image, why string) {
		a.log.Warn("policy: rollout paused itself", "image", image, "reason", why)
	})
	if err := a.openBatches(p); err != nil {
		return nil, err
	}
	return p, nil
}

// openBatches opens the policy's batch lines in the fleet record. A batch
// that exists is left as it is (a closed one is never reopened); one that
// cannot be opened refuses the policy, so that the line never silently
// does nothing.
func (a *Appliance) openBatches(p *policy.Policy) error {
	if len(p.Batches) == 0 {
		return nil
	}
	if a.store == nil {
		return fmt.Errorf("policy %s:%d: batch needs the fleet record; start otabox with --data-dir", a.cfg.Policy, p.Batches[0].Line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, br := range p.Batches {
		old, err := a.store.EnsureBatch(ctx, store.Batch{Name: br.Name, Image: br.Image, Group: br.Group, Expect: br.Expect,
			Source: fmt.Sprintf("%s:%d", a.cfg.Policy, br.Line)})
		switch {
		case err != nil:
			return fmt.Errorf("policy %s:%d: %w", a.cfg.Policy, br.Line, err)
		case old == nil:
			a.log.Info("batch opened by the policy", "batch", br.Name, "image", br.Image, "group", br.Group, "expect", br.Expect)
		case !old.IsOpen():
			a.log.Info(fmt.Sprintf("policy %s:%d: batch %s was closed at %s; the line does nothing (remove it, or name a new batch)",
				a.cfg.Policy, br.Line, br.Name, old.Closed.Local().Format("2006-01-02 15:04")))
		}
	}
	return nil
}

// batchFor is the open batch that covers a device asking /update: one
// limited to a policy group it is in, else one for every device. Read from
// the record on every check-in, so that `otabox batch start` and `close`
// apply from the next one.
func (a *Appliance) batchFor(facts *device.Facts) *decide.Batch {
	if a.store == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	bs, err := a.store.OpenBatches(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrUnavailable) {
			a.log.Warn("store: open batches unavailable; the device is answered as if none were open", "err", err)
		}
		return nil
	}
	p := a.h.Policy()
	var all *store.Batch
	for i := range bs {
		b := &bs[i]
		if b.Group == "" {
			all = b
			continue
		}
		defined, in := p.InGroup(b.Group, facts.MAC())
		if !defined {
			if _, seen := a.batchWarned.LoadOrStore(b.Name, true); !seen {
				a.log.Warn(fmt.Sprintf("batch %s is limited to group %s, which the policy does not define: it covers no device until the policy does", b.Name, b.Group))
			}
			continue
		}
		if in {
			return &decide.Batch{Name: b.Name, Image: b.Image}
		}
	}
	if all != nil {
		return &decide.Batch{Name: all.Name, Image: all.Image}
	}
	return nil
}

// reloadPolicy re-reads the policy file (SIGHUP). A file that does not
// parse, or names an image the catalog lacks, is refused: the previous
// policy stays in force, and the log and the status page say why. A
// reload clears the hold-back of every device it names by MAC.
func (a *Appliance) reloadPolicy() {
	if a.cfg.Policy == "" {
		return
	}
	p, err := a.loadPolicy()
	if err != nil {
		msg := err.Error()
		a.policyErr.Store(&msg)
		a.log.Error("policy not reloaded; the previous one stays in force", "err", err)
		return
	}
	a.policyErr.Store(nil)
	a.h.SetPolicy(p)
	cleared := 0
	for _, mac := range p.MACs() {
		if a.store.Retry(mac) {
			cleared++
		}
	}
	a.log.Info("policy reloaded", "file", a.cfg.Policy, "max_downloads", p.MaxDownloads, "hold_backs_cleared", cleared)
}

// publish puts a new catalog in force and warns about every policy rule
// whose image left it: such a rule now fails closed (a pin answers 304
// with the reason; a rollout's image cannot be served anyway).
func (a *Appliance) publish(cat *catalog.Catalog) {
	old := a.h.Catalog()
	a.h.SetCatalog(cat)
	old.Close(cat) // the files only it pinned; running downloads hold their own
	for _, r := range a.h.Policy().Missing(images(cat)) {
		a.log.Warn(fmt.Sprintf("policy %s:%d: %s names %q, which left the catalog; the rule fails closed until it returns or the policy changes", a.cfg.Policy, r.Line, r.Rule, r.Image))
	}
	a.prune(cat)
}

// prune deletes what the data dir keeps for files no longer in a whole
// disk catalog (none pending): their copies and their compressed images,
// so that a folder whose images are replaced every day keeps one of each,
// not one of every version it ever held. Compressed images stay while
// --gzip is off, for when it is on again.
func (a *Appliance) prune(cat *catalog.Catalog) {
	if a.store == nil || a.cfg.Firmware.Dir == "" {
		return
	}
	if n, _ := cat.PendingCount(); n > 0 {
		return
	}
	keep := map[string]bool{}
	for _, e := range cat.Files() {
		keep[e.SHA256] = true
	}
	if n, err := a.store.PruneCopies(keep); err != nil {
		a.log.Warn("catalog: could not delete the copies of files that left the catalog", "err", err)
	} else if n > 0 {
		a.log.Info("catalog: deleted the copies of files that left the catalog", "files", n)
	}
	if a.cfg.gzip() == nil {
		return
	}
	n, err := a.store.PruneGzip(keep)
	if err != nil {
		a.log.Warn("catalog: could not delete compressed images of files that left the catalog", "err", err)
	} else if n > 0 {
		a.log.Info("catalog: deleted the compressed images of files that left the catalog", "images", n)
	}
}

// policyView is the policy's state for the status page.
func (a *Appliance) policyView() web.PolicyView {
	v := web.PolicyView{File: a.cfg.Policy}
	if e := a.policyErr.Load(); e != nil {
		v.Err = *e
	}
	p := a.h.Policy()
	v.Paused = p.Paused()
	for _, r := range p.Missing(images(a.h.Catalog())) {
		v.Missing = append(v.Missing, fmt.Sprintf("line %d: %s %s", r.Line, r.Rule, r.Image))
	}
	return v
}

// record is what the fleet record knows of the device that sent facts:
// the image held back from it, counting this very check-in (the second
// time a device comes back still running its old image after being sent
// a new one whole, it is not sent it again), and its filesystem image.
func (a *Appliance) record(facts *device.Facts) decide.Record {
	mac := facts.MAC()
	if mac == "" || a.store == nil {
		return decide.Record{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	h := a.store.Hold(ctx, mac)
	// A device cannot ask again while its download runs: a pending one is
	// a handler still recording its end. Wait for it (briefly), so that
	// this check-in is judged against how that download ended.
	for i := 0; h.Pending && i < 20; i++ {
		time.Sleep(25 * time.Millisecond)
		h = a.store.Hold(ctx, mac)
	}
	failures, until := h.After(facts.Digest(), time.Now())
	return decide.Record{
		Hold:       decide.Hold{Digests: h.SentDigests, Until: until, Failures: failures},
		Filesystem: h.FilesystemSHA256,
	}
}

// rolloutStats counts a rollout's failures in the store. Not cached: a
// check-in that failed is committed before its answer, and the very next
// decision must see it (an indexed count over the devices sent the image).
func (a *Appliance) rolloutStats(image string, since time.Time) (sent, failed int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sent, failed, err := a.store.RolloutStats(ctx, image, since)
	if err != nil {
		a.log.Debug("store: rollout counts unavailable", "image", image, "err", err)
	}
	return sent, failed
}
