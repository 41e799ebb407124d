package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations create and evolve the schema, one step per schema version.
// Step i takes a database at version i to version i+1; the version lives in
// the schema_version table and every step runs in one transaction, so a
// crash mid-migration leaves the previous version intact.
var migrations = []string{
	// 1: devices and events.
	`CREATE TABLE devices (
		mac             TEXT PRIMARY KEY,
		family          TEXT NOT NULL DEFAULT '',
		chip            TEXT NOT NULL DEFAULT '',
		ip              TEXT NOT NULL DEFAULT '',
		first_seen      INTEGER NOT NULL,           -- unix ms
		last_seen       INTEGER NOT NULL,
		running         TEXT NOT NULL DEFAULT '',   -- catalog image it runs, when known
		digest          TEXT NOT NULL DEFAULT '',   -- sketch MD5 / SHA-256 it reported
		sdk             TEXT NOT NULL DEFAULT '',
		decision        TEXT NOT NULL DEFAULT '',
		reason          TEXT NOT NULL DEFAULT '',
		state           TEXT NOT NULL DEFAULT '',   -- '', sent, cut-off, confirmed, failed
		sent            TEXT NOT NULL DEFAULT '',   -- image of the last update
		sent_digests    TEXT NOT NULL DEFAULT '',   -- its running digests, space-separated
		prev_digest     TEXT NOT NULL DEFAULT '',   -- what it ran when that image was sent
		sent_at         INTEGER NOT NULL DEFAULT 0, -- unix ms of that download
		requests        INTEGER NOT NULL DEFAULT 0,
		downloads       INTEGER NOT NULL DEFAULT 0,
		failures        INTEGER NOT NULL DEFAULT 0, -- consecutive failed updates to sent
		held_until      INTEGER NOT NULL DEFAULT 0, -- unix ms; 0: not held back
		pending_event   INTEGER NOT NULL DEFAULT 0, -- a download decided, its end not yet recorded
		pending_image   TEXT NOT NULL DEFAULT '',
		pending_digests TEXT NOT NULL DEFAULT '',
		pending_prev    TEXT NOT NULL DEFAULT ''
	) WITHOUT ROWID;
	CREATE INDEX devices_last_seen ON devices(last_seen);
	CREATE INDEX devices_state ON devices(state);
	CREATE INDEX devices_sent ON devices(sent, sent_at);
	CREATE TABLE events (
		id         INTEGER PRIMARY KEY,
		time       INTEGER NOT NULL,               -- unix ms
		client     TEXT NOT NULL DEFAULT '',
		mac        TEXT NOT NULL DEFAULT '',
		family     TEXT NOT NULL DEFAULT '',
		method     TEXT NOT NULL DEFAULT '',
		endpoint   TEXT NOT NULL DEFAULT '',
		target     TEXT NOT NULL DEFAULT '',
		decision   TEXT NOT NULL DEFAULT '',
		status     INTEGER NOT NULL DEFAULT 0,
		reason     TEXT NOT NULL DEFAULT '',
		image      TEXT NOT NULL DEFAULT '',
		digest     TEXT NOT NULL DEFAULT '',
		running    TEXT NOT NULL DEFAULT '',
		sdk        TEXT NOT NULL DEFAULT '',
		free_space INTEGER NOT NULL DEFAULT -1,
		chip_size  INTEGER NOT NULL DEFAULT -1,
		bytes      INTEGER NOT NULL DEFAULT 0,
		size       INTEGER NOT NULL DEFAULT 0,
		completed  INTEGER NOT NULL DEFAULT 0,
		finished   INTEGER NOT NULL DEFAULT 1,     -- 0 while a download runs
		took_ms    INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX events_mac ON events(mac, id);
	CREATE INDEX events_unfinished ON events(finished) WHERE finished = 0;
	CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;`,
	// 2: what the catalog learned from each disk file, by its stamp, so
	// that a restart publishes unchanged files without reading them.
	`CREATE TABLE files (
		path      TEXT PRIMARY KEY,
		size      INTEGER NOT NULL,
		mtime_ns  INTEGER NOT NULL,
		ctime_ns  INTEGER NOT NULL,
		ino       INTEGER NOT NULL,
		dev       INTEGER NOT NULL,
		keys      TEXT NOT NULL DEFAULT '',  -- the --verify-key set it was checked under
		type      TEXT NOT NULL,
		md5       TEXT NOT NULL,
		sha256    TEXT NOT NULL,
		image     TEXT NOT NULL DEFAULT '',  -- espimage.Image as JSON
		verified  TEXT NOT NULL DEFAULT '',
		seen      INTEGER NOT NULL           -- unix seconds it was last read
	) WITHOUT ROWID;`,
	// 3: factory batches, and what each device did in one.
	`CREATE TABLE batches (
		name      TEXT PRIMARY KEY,
		image     TEXT NOT NULL,               -- catalog path every device in it is given
		grp       TEXT NOT NULL DEFAULT '',    -- policy group it is limited to; '' for every device
		expect    INTEGER NOT NULL DEFAULT 0,  -- boards on the tray, 0 when not said
		note      TEXT NOT NULL DEFAULT '',
		customer  TEXT NOT NULL DEFAULT '',
		ord       TEXT NOT NULL DEFAULT '',    -- customer's order
		source    TEXT NOT NULL DEFAULT '',    -- "cli", or the policy file and line
		opened    INTEGER NOT NULL,            -- unix ms
		closed    INTEGER NOT NULL DEFAULT 0   -- unix ms; 0 while open
	) WITHOUT ROWID;
	CREATE TABLE batch_devices (
		batch          TEXT NOT NULL,
		mac            TEXT NOT NULL,
		ip             TEXT NOT NULL DEFAULT '',
		family         TEXT NOT NULL DEFAULT '',
		chip           TEXT NOT NULL DEFAULT '',
		revision       TEXT NOT NULL DEFAULT '',
		flash_size     INTEGER NOT NULL DEFAULT -1,
		before_image   TEXT NOT NULL DEFAULT '',
		before_version TEXT NOT NULL DEFAULT '',
		before_md5     TEXT NOT NULL DEFAULT '',
		after_image    TEXT NOT NULL DEFAULT '',
		after_version  TEXT NOT NULL DEFAULT '',
		after_md5      TEXT NOT NULL DEFAULT '',  -- the digest it reported running the batch image
		bytes          INTEGER NOT NULL DEFAULT 0,
		size           INTEGER NOT NULL DEFAULT 0,
		first_seen     INTEGER NOT NULL,
		last_seen      INTEGER NOT NULL,
		started        INTEGER NOT NULL DEFAULT 0, -- first download decided
		ended          INTEGER NOT NULL DEFAULT 0, -- confirmed, failed, refused or cut off
		attempts       INTEGER NOT NULL DEFAULT 0, -- downloads started
		result         TEXT NOT NULL DEFAULT '',
		reason         TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (batch, mac)
	) WITHOUT ROWID;`,
	// 4: --gzip's compressed images, by their source's SHA-256; the bytes
	// are in gzip/<source>.gz beside the database.
	`CREATE TABLE gzip (
		source   TEXT PRIMARY KEY,         -- SHA-256 of the image compressed
		encoder  TEXT NOT NULL,            -- what compressed it (catalog.GzipEncoder)
		size     INTEGER NOT NULL,         -- 0: compressing gains nothing, no file
		md5      TEXT NOT NULL DEFAULT '',
		sha256   TEXT NOT NULL DEFAULT '',
		seen     INTEGER NOT NULL          -- unix seconds it was compressed
	) WITHOUT ROWID;`,
	// 5: identical catalog listings of one commit are one row with their
	// count: a listing flood costs a row per 100 ms, not one per request.
	`ALTER TABLE events ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;`,
	// 6: the writer's commits, counted in each (see CommitsFile): fewer
	// here than the file beside remembers means transactions were lost.
	`CREATE TABLE commits (
		id TEXT NOT NULL DEFAULT '',  -- the record's identity, made at first open
		n  INTEGER NOT NULL
	);
	INSERT INTO commits(n) VALUES (0);`,
	// 7: the filesystem image each device last received whole: devices
	// report no filesystem digest, so this is how /update in spiffs mode
	// knows that a device already has the newest one.
	`ALTER TABLE devices ADD COLUMN fs_image TEXT NOT NULL DEFAULT '';
	ALTER TABLE devices ADD COLUMN fs_sha256 TEXT NOT NULL DEFAULT '';
	ALTER TABLE devices ADD COLUMN fs_at INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE devices ADD COLUMN pending_fs INTEGER NOT NULL DEFAULT 0; -- the pending download is a filesystem image`,
	// 8: boards flashed over USB by otabox flash: the tray slot, and the
	// SHA-256 of what was written; the batch image's version and digests,
	// as the catalog had them when the batch opened, for the report.
	`ALTER TABLE batch_devices ADD COLUMN slot TEXT NOT NULL DEFAULT '';
	ALTER TABLE batch_devices ADD COLUMN after_sha256 TEXT NOT NULL DEFAULT '';
	ALTER TABLE batch_devices ADD COLUMN flash_id TEXT NOT NULL DEFAULT '';  -- the flash chip's JEDEC id, read over USB
	ALTER TABLE batches ADD COLUMN image_version TEXT NOT NULL DEFAULT '';
	ALTER TABLE batches ADD COLUMN image_md5 TEXT NOT NULL DEFAULT '';
	ALTER TABLE batches ADD COLUMN image_sha256 TEXT NOT NULL DEFAULT '';`,
}

// SchemaVersion is the schema this build writes.
var SchemaVersion = len(migrations)

// migrate brings db to SchemaVersion. A database written by a newer
// otabox is refused rather than guessed at.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	var v int
	err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	switch {
	case err == sql.ErrNoRows:
		if _, err := db.ExecContext(ctx, `INSERT INTO schema_version(version) VALUES (0)`); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	case err != nil:
		return fmt.Errorf("schema: %w", err)
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version %d is newer than this otabox's %d: run the newer otabox, or move otabox.db aside", v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("schema %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("schema %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("schema %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("schema %d: %w", v+1, err)
		}
	}
	return nil
}
