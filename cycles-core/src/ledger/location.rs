//! Opening a ledger named by one location string: a `postgres://` URL or a SQLite file path.
//!
//! The CLI's `--ledger`, Python's `Authority.open(...)` and Node's `Authority.open(...)` all
//! hand their string to [`open_ledger`], so the choice of backend is made here once, and a
//! PostgreSQL URL is never opened as something else.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Ledger, SqliteLedger, SqliteOptions, Synchronous};
#[cfg(feature = "postgres")]
use super::{PostgresLedger, PostgresOptions};
use crate::error::{CyclesError, Result};

/// Where a ledger lives, as named by a location string (see [`LedgerLocation::parse`]).
///
/// `Display` and `Debug` hide a URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// A SQLite file (created when opened if absent).
    Sqlite(PathBuf),
    /// A PostgreSQL database: a `postgres://` or `postgresql://` URL (scheme in lowercase),
    /// with the optional `schema=NAME` parameter of `PostgresLedger` (feature `postgres`).
    Postgres(String),
}

/// Options for [`open_ledger`]: each backend takes its own, so one value serves any location.
#[derive(Debug, Clone, Default)]
pub struct LedgerOptions {
    /// Used when the location is a SQLite file.
    pub sqlite: SqliteOptions,
    /// Used when the location is a PostgreSQL URL.
    #[cfg(feature = "postgres")]
    pub postgres: PostgresOptions,
}

impl LedgerOptions {
    /// These options with the durability setting of every backend set to `synchronous` (the
    /// bindings' `synchronous` option): `Full` acknowledges an operation only once it is
    /// flushed to disk (the SQLite file, or the server's WAL).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.sqlite.synchronous = synchronous;
        #[cfg(feature = "postgres")]
        {
            self.postgres.synchronous = synchronous;
        }
        self
    }
}

/// The schemes a location may carry; anything else with a scheme is refused rather than
/// taken for a file name.
const POSTGRES_SCHEMES: [&str; 2] = ["postgres", "postgresql"];

impl LedgerLocation {
    /// Reads a location string:
    ///
    /// - `postgres://...` or `postgresql://...` (scheme in any case): a PostgreSQL URL;
    /// - anything else: a SQLite file path (a path that is not valid UTF-8 included).
    ///
    /// Refused with `INVALID_REQUEST` (field `ledger`): an empty string; another URL scheme
    /// (`mysql://`, `sqlite://`); `postgres:` not followed by `//`. These would otherwise
    /// become oddly named SQLite files, silently separate from the intended ledger.
    ///
    /// ```
    /// use cycles_core::LedgerLocation;
    /// let pg = LedgerLocation::parse("postgresql://cycles:secret@db.internal/cycles?schema=agents")?;
    /// assert!(matches!(pg, LedgerLocation::Postgres(_)));
    /// assert_eq!(pg.to_string(), "postgresql://cycles:***@db.internal/cycles?schema=agents");
    /// let file = LedgerLocation::parse("data/cycles.db")?;
    /// assert_eq!(file, LedgerLocation::Sqlite("data/cycles.db".into()));
    /// assert_eq!(LedgerLocation::parse("mysql://db/cycles").unwrap_err().code(), "INVALID_REQUEST");
    /// # Ok::<(), cycles_core::CyclesError>(())
    /// ```
    pub fn parse(location: impl AsRef<OsStr>) -> Result<Self> {
        let location = location.as_ref();
        // A URL is always UTF-8; a path need not be.
        let Some(s) = location.to_str() else {
            return Ok(LedgerLocation::Sqlite(PathBuf::from(location)));
        };
        if s.is_empty() {
            return Err(CyclesError::invalid(
                "ledger",
                "empty location: give a SQLite file path or a postgres:// URL",
            ));
        }
        if let Some((scheme, rest)) = s.split_once(':').filter(|(sc, _)| is_scheme(sc)) {
            let lower = scheme.to_ascii_lowercase();
            let is_pg = POSTGRES_SCHEMES.contains(&lower.as_str());
            if is_pg && rest.starts_with("//") {
                return Ok(LedgerLocation::Postgres(format!("{lower}:{rest}")));
            }
            if is_pg {
                return Err(CyclesError::invalid(
                    "ledger",
                    format!("{scheme}: must be followed by // (postgres://user@host/db)"),
                ));
            }
            if rest.starts_with("//") {
                return Err(CyclesError::invalid(
                    "ledger",
                    format!(
                        "{scheme}:// is not a ledger location: give a SQLite file path or a postgres:// URL"
                    ),
                ));
            }
        }
        Ok(LedgerLocation::Sqlite(PathBuf::from(s)))
    }

    /// Opens the ledger here: creates the SQLite file, or connects to PostgreSQL and creates
    /// its schema, if absent.
    ///
    /// A PostgreSQL location in a build without the `postgres` feature fails with
    /// `LEDGER_UNAVAILABLE` (the gate fails closed); it is never opened as a file.
    pub fn open(&self, options: &LedgerOptions) -> Result<Arc<dyn Ledger>> {
        match self {
            LedgerLocation::Sqlite(path) => Ok(Arc::new(SqliteLedger::open_with(
                path,
                options.sqlite.clone(),
            )?)),
            #[cfg(feature = "postgres")]
            LedgerLocation::Postgres(url) => Ok(Arc::new(PostgresLedger::connect_with(
                url,
                options.postgres.clone(),
            )?)),
            #[cfg(not(feature = "postgres"))]
            LedgerLocation::Postgres(_) => Err(CyclesError::LedgerUnavailable(format!(
                "{self}: this build has no PostgreSQL support (cycles-core was built without its `postgres` feature)"
            ))),
        }
    }
}

/// Opens the ledger a location string names: a `postgres://` / `postgresql://` URL opens a
/// `PostgresLedger` (feature `postgres`), anything else a
/// [`SqliteLedger`] file. See [`LedgerLocation::parse`] for what is refused, and
/// [`LedgerLocation::open`] for what opening does.
///
/// ```
/// use cycles_core::{Authority, LedgerOptions, Policy, Tier, open_ledger};
/// let dir = tempfile::tempdir()?;
/// let ledger = open_ledger(dir.path().join("cycles.db"), &LedgerOptions::default())?;
/// let auth = Authority::builder()
///     .policy(Policy::default().register("read_file", Tier::T0))
///     .shared_ledger(ledger)
///     .build()?;
/// assert!(auth.verify()?.ok);
/// // The same call with "postgres://cycles@db.internal:5432/cycles?schema=agents" connects
/// // to PostgreSQL instead.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open_ledger(
    location: impl AsRef<OsStr>,
    options: &LedgerOptions,
) -> Result<Arc<dyn Ledger>> {
    LedgerLocation::parse(location)?.open(options)
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`. At least two characters, so that
/// a Windows drive (`C:\x`) stays a path.
fn is_scheme(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The URL with its password (in the user info or a `password=` parameter) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = main.split_at(main.find('/').unwrap_or(main.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Sqlite(p) => write!(f, "{}", p.display()),
            LedgerLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            LedgerLocation::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authority, BudgetSpec, Policy, Unit};

    fn pg(s: &str) -> String {
        match LedgerLocation::parse(s).unwrap() {
            LedgerLocation::Postgres(url) => url,
            other => panic!("{s:?} parsed as {other:?}"),
        }
    }

    fn invalid(s: &str) -> String {
        match LedgerLocation::parse(s) {
            Err(e @ CyclesError::InvalidRequest { .. }) => e.to_string(),
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn postgres_urls_in_either_scheme_and_any_case() {
        assert_eq!(pg("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            pg("postgresql://u@h:5433/db?schema=s"),
            "postgresql://u@h:5433/db?schema=s"
        );
        // The client only knows the lowercase prefixes.
        assert_eq!(pg("POSTGRES://u@h/db"), "postgres://u@h/db");
        assert_eq!(pg("PostgreSQL://u@h/db"), "postgresql://u@h/db");
    }

    #[test]
    fn everything_else_is_a_sqlite_path() {
        for s in [
            "cycles.db",
            "/var/lib/cycles/cycles.db",
            "./data:2026.db",
            "C:\\cycles.db",
            "postgres.db",
            ":memory:",
        ] {
            assert_eq!(
                LedgerLocation::parse(s).unwrap(),
                LedgerLocation::Sqlite(PathBuf::from(s)),
                "{s}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_utf8_is_a_sqlite_path() {
        use std::os::unix::ffi::OsStrExt;
        let raw = OsStr::from_bytes(b"led\xffger.db");
        assert_eq!(
            LedgerLocation::parse(raw).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from(raw))
        );
    }

    #[test]
    fn other_schemes_and_malformed_postgres_locations_are_refused() {
        assert!(invalid("").contains("empty"));
        assert!(invalid("mysql://h/db").contains("mysql://"));
        assert!(invalid("sqlite:///tmp/x.db").contains("sqlite://"));
        assert!(invalid("postgres:h/db").contains("//"));
        assert!(invalid("PostgreSQL:/h/db").contains("//"));
    }

    #[test]
    fn display_and_debug_hide_the_password() {
        let loc =
            LedgerLocation::parse("postgres://cycles:s3cret@db:5432/c?password=s3cret&schema=a")
                .unwrap();
        for shown in [loc.to_string(), format!("{loc:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("cycles:***@db:5432/c"), "{shown}");
            assert!(shown.contains("password=***&schema=a"), "{shown}");
        }
        let no_password = LedgerLocation::parse("postgres://cycles@db/c").unwrap();
        assert_eq!(no_password.to_string(), "postgres://cycles@db/c");
    }

    #[test]
    fn a_sqlite_location_opens_a_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let opts = LedgerOptions::default().synchronous(Synchronous::Normal);
        assert_eq!(opts.sqlite.synchronous, Synchronous::Normal);
        let first = Authority::builder()
            .shared_ledger(open_ledger(&path, &opts).unwrap())
            .build()
            .unwrap();
        first
            .set_budget(&BudgetSpec::new("tenant:a", Unit::RiskPoints, 7))
            .unwrap();
        assert!(path.exists());
        // A second open of the same string sees what the first wrote: it is the same file.
        let second = Authority::builder()
            .policy(Policy::default())
            .shared_ledger(open_ledger(path.to_str().unwrap(), &opts).unwrap())
            .build()
            .unwrap();
        let b = second.balances(Some("tenant:a")).unwrap();
        assert_eq!((b.len(), b[0].allocated), (1, 7));
        assert_eq!(
            second.ledger().describe(),
            format!("sqlite:{}", path.display())
        );
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn without_the_feature_a_postgres_url_fails_closed() {
        let url = "postgres://cycles:s3cret@127.0.0.1:1/cycles";
        let err = open_ledger(url, &LedgerOptions::default()).unwrap_err();
        assert_eq!(err.code(), "LEDGER_UNAVAILABLE");
        assert!(err.to_string().contains("no PostgreSQL support"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn with_the_feature_an_unreachable_server_is_ledger_unavailable() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let mut opts = LedgerOptions::default();
        opts.postgres.connect_timeout = std::time::Duration::from_millis(300);
        let err = open_ledger("postgres://cycles:s3cret@127.0.0.1:1/cycles", &opts).unwrap_err();
        assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
