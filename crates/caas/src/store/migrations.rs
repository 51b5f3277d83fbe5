//! Schema migrations, applied in order at start. The same SQL runs on SQLite
//! and PostgreSQL: TEXT ids, BIGINT numbers (0/1 for booleans, since the Any
//! driver maps only int/float/text/blob), partial unique indexes.

/// (version, statements). Never edit an applied migration: add a new one.
pub const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE users (
            id TEXT PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin', 'teacher', 'student')),
            password_hash TEXT NOT NULL,
            disabled BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL
        )",
            // One row per login; the refresh token is stored hashed and rotated.
            "CREATE TABLE logins (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id),
            refresh_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            revoked BIGINT NOT NULL DEFAULT 0
        )",
            "CREATE INDEX logins_user ON logins(user_id)",
            "CREATE TABLE templates (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            owner_id TEXT NOT NULL REFERENCES users(id),
            spec TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
            // `enrolled` is the counter that makes capacity atomic: a join is an
            // UPDATE ... WHERE enrolled < capacity, safe on both databases.
            "CREATE TABLE classes (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            code TEXT NOT NULL UNIQUE,
            capacity BIGINT NOT NULL,
            enrolled BIGINT NOT NULL DEFAULT 0,
            join_code TEXT NOT NULL UNIQUE,
            template_id TEXT REFERENCES templates(id),
            created_by TEXT NOT NULL REFERENCES users(id),
            created_at BIGINT NOT NULL
        )",
            "CREATE TABLE class_teachers (
            class_id TEXT NOT NULL REFERENCES classes(id),
            user_id TEXT NOT NULL REFERENCES users(id),
            PRIMARY KEY (class_id, user_id)
        )",
            "CREATE TABLE enrolments (
            class_id TEXT NOT NULL REFERENCES classes(id),
            user_id TEXT NOT NULL REFERENCES users(id),
            created_at BIGINT NOT NULL,
            PRIMARY KEY (class_id, user_id)
        )",
            // owner/lease_until: the instance driving a transition and until
            // when; another instance takes over only after the lease expires.
            "CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            class_id TEXT NOT NULL REFERENCES classes(id),
            student_id TEXT NOT NULL REFERENCES users(id),
            template_id TEXT NOT NULL REFERENCES templates(id),
            state TEXT NOT NULL,
            reason TEXT,
            sandbox TEXT NOT NULL,
            address TEXT,
            owner TEXT,
            lease_until BIGINT NOT NULL DEFAULT 0,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
            // Pressing start twice (or two instances) never makes two sessions.
            "CREATE UNIQUE INDEX sessions_one_active ON sessions(class_id, student_id)
            WHERE state IN ('requested', 'starting', 'ready', 'stopping')",
            "CREATE INDEX sessions_state ON sessions(state)",
            "CREATE INDEX sessions_sandbox ON sessions(sandbox)",
            "CREATE TABLE audit (
            id TEXT PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            actor TEXT,
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT
        )",
            "CREATE INDEX audit_at ON audit(at_ms)",
        ],
    ),
    (
        2,
        &[
            // One row per verified archive: written, read back, checked.
            // `kind`: 'final' (the session's end), 'checkpoint', or 'orphan'
            // (a labelled sandbox no session owns: its ids come from its
            // labels and may be unknown here, hence no foreign keys).
            "CREATE TABLE archives (
                id TEXT PRIMARY KEY,
                class_id TEXT NOT NULL,
                student_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('final', 'checkpoint', 'orphan')),
                object_key TEXT NOT NULL UNIQUE,
                size BIGINT NOT NULL,
                sha256 TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX archives_owner ON archives(class_id, student_id, created_at)",
            // A session is archived at its end once, whatever retries happen.
            "CREATE UNIQUE INDEX archives_one_final ON archives(session_id) WHERE kind = 'final'",
            // Back-off of archive retries.
            "ALTER TABLE sessions ADD COLUMN archive_attempts BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE sessions ADD COLUMN retry_at BIGINT NOT NULL DEFAULT 0",
            // What the workspace starts from: decided once per session
            // ('undecided' -> 'none' | 'pending' -> 'done'), so a retry after
            // a crash restores the same archive or nothing.
            "ALTER TABLE sessions ADD COLUMN restore_from TEXT",
            "ALTER TABLE sessions ADD COLUMN restore_state TEXT NOT NULL DEFAULT 'undecided'",
            // A teacher's choice for a student's next session: an archive, or
            // NULL for an empty workspace. Consumed by that session.
            "CREATE TABLE restore_choices (
                class_id TEXT NOT NULL REFERENCES classes(id),
                student_id TEXT NOT NULL REFERENCES users(id),
                archive_id TEXT,
                chosen_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (class_id, student_id)
            )",
            // An exam: sessions of the class start only in [starts_at,
            // ends_at); at ends_at every one is archived and removed
            // (collected_at set once, by whichever instance gets there).
            "CREATE TABLE exams (
                class_id TEXT PRIMARY KEY REFERENCES classes(id),
                starts_at BIGINT NOT NULL,
                ends_at BIGINT NOT NULL,
                collected_at BIGINT,
                set_by TEXT NOT NULL
            )",
            // An archive-pending session still owns its workspace volume: no
            // new session for that student until it is archived.
            "DROP INDEX sessions_one_active",
            "CREATE UNIQUE INDEX sessions_one_active ON sessions(class_id, student_id)
                WHERE state IN ('requested', 'starting', 'ready', 'stopping', 'archive_pending')",
        ],
    ),
];
