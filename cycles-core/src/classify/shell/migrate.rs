//! Schema migration and ORM tools (`prisma`, `rails`/`rake`, Django's `manage.py`, Laravel's
//! `artisan`, `sequelize`, `knex`, `typeorm`, `drizzle-kit`, `mikro-orm`, `mix ecto.*`,
//! `alembic`, `flask db`, `dotnet ef`, `diesel`, `sqlx`, golang-migrate, `goose`, `flyway`,
//! `liquibase`, `atlas`, `dbmate`, `sqitch`).
//!
//! These run against whatever database `DATABASE_URL` or the project's settings name, which
//! is production as often as not, and several of them drop every table in one word:
//! `prisma migrate reset`, `rails db:drop`, `manage.py flush`, `artisan migrate:fresh`.
//! - `shell.db_reset` (4): drops, resets or wipes a database or all of its tables, or reverts
//!   every migration (`alembic downgrade base`, `knex migrate:rollback --all`).
//! - `shell.db_load` (3): replaces or deletes rows of whole tables (`rails db:fixtures:load`,
//!   `manage.py loaddata`, `knex seed:run`, `sequelize db:seed:undo:all`).
//! - `shell.db_migrate` (3): applies or reverts schema migrations (`rails db:migrate`,
//!   `alembic upgrade head`); a migration may drop a column.
//! - `shell.db_seed` (2): creates a database or inserts seed rows.
//!
//! Reading the migration status, or printing the SQL instead of running it (`--sql`,
//! `--pretend`, `updateSQL`), is tier 0; generating migration files tier 1; no subcommand at
//! all prints help (tier 0). A subcommand without a rule here is an unknown command (tier 2)
//! named by its words, so `rake db:nuke_everything` still meets the name heuristics.
//! Subcommands are looked for among all the operands, not at a fixed position, since options
//! with values may come first (`flask --app app db downgrade base`).

use super::{
    Stdin, code_literals, command, inline_code, names, operands, option_values, sql_stdin,
    unknown_command,
};
use crate::classify::Verdict;
use crate::classify::sql::SqlDialect;
use crate::model::Tier;

/// Programs this module rates (Django's `manage.py` and Laravel's `artisan` also when run by
/// their interpreter, `cargo sqlx` as `sqlx`).
pub(super) const PROGRAMS: &[&str] = &[
    "prisma",
    "rails",
    "rake",
    "manage.py",
    "django-admin",
    "artisan",
    "sequelize",
    "sequelize-cli",
    "knex",
    "typeorm",
    "typeorm-ts-node-commonjs",
    "typeorm-ts-node-esm",
    "drizzle-kit",
    "mikro-orm",
    "mix",
    "alembic",
    "flask",
    "diesel",
    "sqlx",
    "migrate",
    "goose",
    "flyway",
    "liquibase",
    "atlas",
    "dbmate",
    "sqitch",
    "hasura",
    // WordPress and Drupal CLIs: their database commands.
    "wp",
    "drush",
    // Symfony's `bin/console` and `symfony console`: Doctrine's commands.
    "console",
    "symfony",
];

type Rating = (Tier, &'static str);

const RESET: Rating = (Tier::T4, "shell.db_reset");
const LOAD: Rating = (Tier::T3, "shell.db_load");
const MIGRATE: Rating = (Tier::T3, "shell.db_migrate");
const SEED: Rating = (Tier::T2, "shell.db_seed");
const READ: Rating = (Tier::T0, "shell.read");
const LOCAL: Rating = (Tier::T1, "shell.local_write");
const CODE: Rating = (Tier::T2, "shell.inline_code");
const SCRIPT: Rating = (Tier::T2, "shell.script");
const SQL_FILE: Rating = (Tier::T4, "shell.sql_file");
const PUBLISH: Rating = (Tier::T2, "shell.publish");
const UNPUBLISH: Rating = (Tier::T3, "shell.unpublish");

/// A tool's arguments: the raw words, the operands, and the operands compared without case,
/// `-` or `_` (`dropAll`, `drop-all`, `DROP_ALL`).
struct Args<'a> {
    rest: &'a [String],
    ops: Vec<&'a str>,
    norm: Vec<String>,
}

impl<'a> Args<'a> {
    fn new(rest: &'a [String]) -> Self {
        let ops = operands(rest);
        let norm = ops
            .iter()
            .map(|o| o.to_ascii_lowercase().replace(['-', '_'], ""))
            .collect();
        Args { rest, ops, norm }
    }

    /// An operand equals `word` (normalised).
    fn op(&self, word: &str) -> bool {
        self.norm.iter().any(|o| o == word)
    }

    /// The first operand (normalised) that `known` accepts: the subcommand, wherever option
    /// values put it.
    fn sub(&self, known: impl Fn(&str) -> bool) -> Option<&str> {
        self.norm.iter().map(String::as_str).find(|o| known(o))
    }

    /// An option is set: `--all`, or `--all=VALUE` with a value other than false.
    fn flag(&self, names: &[&str]) -> bool {
        self.rest.iter().any(|a| {
            names.iter().any(|n| {
                a == n
                    || a.strip_prefix(n)
                        .and_then(|r| r.strip_prefix('='))
                        .is_some_and(|val| !matches!(val, "false" | "0" | "no"))
            })
        })
    }

    /// The raw word after `word` (relative revisions such as `-1` look like options).
    fn after(&self, word: &str) -> Option<&'a str> {
        let i = self.rest.iter().position(|w| w == word)?;
        self.rest.get(i + 1).map(String::as_str)
    }
}

/// Rates a migration tool's command; `dotnet ef ...` comes here as `ef` with the words after
/// `ef`.
pub(super) fn classify(name: &str, rest: &[String], stdin: &Stdin<'_>, d: usize, v: &mut Verdict) {
    let a = Args::new(rest);
    let rated = if a.ops.is_empty() && !matches!(name, "rake" | "mix") {
        // No subcommand: help or version.
        Some(READ)
    } else {
        rate(name, &a, stdin, d, v)
    };
    match rated {
        Some((tier, rule)) => v.raise(tier, rule),
        None => unknown_command(name, &a.ops, v),
    }
}

fn rate(name: &str, a: &Args<'_>, stdin: &Stdin<'_>, d: usize, v: &mut Verdict) -> Option<Rating> {
    let op = |w: &str| a.op(w);
    let colon = |o: &str| o.contains(':');
    match name {
        "prisma" => prisma(a, stdin, v),
        "console" | "symfony" => doctrine(a, v),
        "wp" if op("db") => {
            if op("reset") || op("drop") || op("clean") {
                Some(RESET)
            } else if op("import") {
                Some(LOAD)
            } else if op("query") {
                match a.after("query") {
                    Some(q) if !q.starts_with('-') => {
                        crate::classify::sql::apply(q, SqlDialect::Mysql, v)
                    }
                    _ => sql_stdin(SqlDialect::Mysql, stdin, v),
                }
                Some(READ)
            } else if op("export") {
                // Writes a dump file.
                Some(LOCAL)
            } else if op("check") || op("size") || op("tables") || op("prefix") {
                Some(READ)
            } else {
                Some(MIGRATE)
            }
        }
        "drush" => match a.sub(|o| {
            o.starts_with("sql")
                || o.contains(':')
                || matches!(
                    o,
                    "updatedb" | "updb" | "deploy" | "cim" | "sitedelete" | "status" | "st"
                )
        })? {
            "sqldrop" | "sql:drop" | "sitedelete" => Some(RESET),
            "sqlsync" | "sql:sync" | "sqlcli" | "sql:cli" => Some(LOAD),
            "sqlquery" | "sql:query" | "sqlq" => {
                match a.ops.iter().skip(1).find(|o| !o.starts_with('-')) {
                    Some(q) => crate::classify::sql::apply(q, SqlDialect::Mysql, v),
                    None => sql_stdin(SqlDialect::Mysql, stdin, v),
                }
                Some(READ)
            }
            "updatedb" | "updb" | "deploy" | "cim" | "config:import" => Some(MIGRATE),
            "sqldump" | "sql:dump" | "status" | "st" => Some(READ),
            _ => None,
        },
        "hasura" => {
            if op("migrate") && op("apply") && a.after("--down") == Some("all") {
                Some(RESET)
            } else if op("migrate") && op("apply") || op("metadata") && (op("apply") || op("clear"))
            {
                Some(MIGRATE)
            } else if op("seed") && op("apply") {
                Some(SEED)
            } else if op("status") || op("inconsistency") || op("diff") || op("version") {
                Some(READ)
            } else if op("create") || op("squash") || op("export") || op("console") || op("init") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "rails" | "rake" => rails(a, stdin, d, v),
        "manage.py" | "django-admin" => django(a, stdin, d, v),
        "artisan" => artisan(a, stdin, d, v),
        "sequelize" | "sequelize-cli" => match a.sub(|o| colon(o) || o == "init")? {
            "db:drop" | "db:migrate:undo:all" => Some(RESET),
            "db:migrate" | "db:migrate:undo" => Some(MIGRATE),
            "db:seed:undo:all" | "db:seed:undo" => Some(LOAD),
            "db:seed" | "db:seed:all" | "db:create" => Some(SEED),
            "db:migrate:status" => Some(READ),
            "init" | "migration:generate" | "migration:create" | "model:generate"
            | "model:create" | "seed:generate" | "seed:create" => Some(LOCAL),
            _ => None,
        },
        "knex" => match a.sub(|o| colon(o) || o == "init")? {
            "migrate:rollback" if a.flag(&["--all"]) => Some(RESET),
            "migrate:down" if to_zero(a) => Some(RESET),
            "migrate:rollback" | "migrate:down" | "migrate:latest" | "migrate:up" => Some(MIGRATE),
            // Knex's seed template starts by deleting every row of the table it fills.
            "seed:run" => Some(LOAD),
            "migrate:status" | "migrate:list" | "migrate:currentversion" => Some(READ),
            "init" | "migrate:make" | "seed:make" => Some(LOCAL),
            _ => None,
        },
        "typeorm" | "typeorm-ts-node-commonjs" | "typeorm-ts-node-esm" => {
            match a.sub(|o| colon(o) || matches!(o, "init" | "query" | "version"))? {
                "schema:drop" => Some(RESET),
                "schema:sync" | "migration:run" | "migration:revert" => Some(MIGRATE),
                "query" => {
                    // `typeorm query "DROP TABLE users"`: the SQL is the next word.
                    match a.after("query") {
                        Some(q) => crate::classify::sql::apply(q, SqlDialect::Generic, v),
                        None => v.raise(Tier::T4, "shell.sql_unknown_input"),
                    }
                    Some(READ)
                }
                // The query result cache lives in the database (or Redis): rows deleted, no
                // data lost.
                "cache:clear" => Some(SEED),
                "schema:log" | "migration:show" | "version" => Some(READ),
                "init" | "migration:create" | "migration:generate" | "entity:create"
                | "subscriber:create" => Some(LOCAL),
                _ => None,
            }
        }
        "drizzle-kit" => {
            let sub = a.sub(|o| {
                [
                    "push",
                    "migrate",
                    "generate",
                    "drop",
                    "up",
                    "check",
                    "studio",
                    "introspect",
                ]
                .iter()
                .any(|k| o.starts_with(k))
                    || o == "pull"
            })?;
            if sub.starts_with("push") {
                // `--force` accepts data-loss statements without asking.
                Some(if a.flag(&["--force"]) { RESET } else { MIGRATE })
            } else if sub.starts_with("migrate") {
                Some(MIGRATE)
            } else if sub.starts_with("check")
                || sub.starts_with("studio")
                || sub.starts_with("introspect")
                || sub == "pull"
            {
                Some(READ)
            } else {
                // `generate`, `up`; `drop` deletes a migration file of the project, not a table.
                Some(LOCAL)
            }
        }
        "mikro-orm" => {
            // Schema commands print their SQL with `--dump` and run it only with `--run`.
            let runs = a.flag(&["--run", "-r"]);
            match a.sub(|o| colon(o) || matches!(o, "debug" | "generateentities"))? {
                "schema:drop" | "schema:fresh" if runs => Some(RESET),
                "migration:fresh" => Some(RESET),
                "schema:update" | "schema:create" if runs => Some(MIGRATE),
                "migration:down" if to_zero(a) => Some(RESET),
                "migration:up" | "migration:down" => Some(MIGRATE),
                "schema:drop" | "schema:fresh" | "schema:update" | "schema:create" => Some(READ),
                "migration:list" | "migration:pending" | "migration:check" | "debug" => Some(READ),
                "migration:create" | "generateentities" | "cache:clear" | "cache:generate" => {
                    Some(LOCAL)
                }
                "seeder:run" => Some(SEED),
                _ => None,
            }
        }
        "mix" => mix(a, stdin, d, v),
        "alembic" => alembic(a, false),
        // Flask-Migrate wraps Alembic as `flask db ...`; other `flask` commands are the app's.
        "flask" => match a.sub(|o| matches!(o, "db" | "run" | "routes" | "shell"))? {
            "db" => alembic(a, true),
            "run" | "routes" => Some(LOCAL),
            _ => Some(CODE),
        },
        "ef" => {
            if op("database") && op("drop") {
                Some(RESET)
            } else if op("database") && op("update") && a.ops.contains(&"0") {
                // `database update 0` reverts every migration.
                Some(RESET)
            } else if op("database") && op("update") {
                Some(MIGRATE)
            } else if op("migrations") && op("remove") && a.flag(&["--force", "-f"]) {
                // Reverts the last migration in the database before removing its file.
                Some(MIGRATE)
            } else if op("migrations")
                && (op("list") || op("script") || op("haspendingmodelchanges"))
                || op("dbcontext") && (op("info") || op("list") || op("script"))
            {
                Some(READ)
            } else if op("migrations") && (op("add") || op("remove") || op("bundle"))
                || op("dbcontext") && (op("scaffold") || op("optimize"))
            {
                Some(LOCAL)
            } else {
                None
            }
        }
        "diesel" => {
            if op("database") && (op("reset") || op("drop"))
                || op("migration") && op("revert") && a.flag(&["--all", "-a"])
            {
                Some(RESET)
            } else if op("migration") && (op("revert") || op("redo") || op("run")) {
                Some(MIGRATE)
            } else if op("database") && op("setup") || op("setup") {
                Some(SEED)
            } else if op("migration") && (op("list") || op("pending")) || op("printschema") {
                Some(READ)
            } else if op("migration") && op("generate") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "sqlx" => {
            // sqlx-cli accepts `db` for `database` and `mig` for `migrate`.
            let database = op("database") || op("db");
            let migrate = op("migrate") || op("mig");
            if database && (op("drop") || op("reset")) {
                Some(RESET)
            } else if migrate && (op("run") || op("revert")) {
                Some(MIGRATE)
            } else if database && (op("create") || op("setup")) {
                Some(SEED)
            } else if migrate && op("info") {
                Some(READ)
            } else if migrate && op("add") || op("prepare") {
                Some(LOCAL)
            } else {
                None
            }
        }
        // golang-migrate: `migrate -path DIR -database URL down [N]`.
        "migrate" => {
            let down_all = a.after("down").is_none_or(|n| n.parse::<u64>().is_err());
            if op("drop") || op("down") && (down_all || a.flag(&["-all", "--all"])) {
                Some(RESET)
            } else if op("down") || op("up") || op("goto") || op("force") {
                Some(MIGRATE)
            } else if op("version") {
                Some(READ)
            } else if op("create") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "goose" => {
            let to_zero = |w: &str| a.after(w).and_then(|n| n.parse::<u64>().ok()) == Some(0);
            if op("reset") || to_zero("down-to") || to_zero("downto") {
                Some(RESET)
            } else if ["down", "downto", "up", "upto", "upbyone", "redo"]
                .iter()
                .any(|w| op(w))
            {
                Some(MIGRATE)
            } else if op("status") || op("version") || op("validate") {
                Some(READ)
            } else if op("create") || op("fix") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "flyway" => {
            if op("clean") {
                Some(RESET)
            } else if op("migrate") || op("undo") || op("repair") || op("baseline") {
                Some(MIGRATE)
            } else if op("info") || op("validate") || op("check") {
                Some(READ)
            } else {
                None
            }
        }
        "liquibase" => {
            // The command word: option values (`--changelog-file changelog.sql`) are operands
            // too, so only words that are commands count.
            let command = |o: &str| {
                [
                    "update",
                    "rollback",
                    "changelogsync",
                    "futurerollback",
                    "dropall",
                    "tag",
                ]
                .iter()
                .any(|c| o.starts_with(c))
                    || ["status", "history", "diff", "validate", "snapshot"].contains(&o)
            };
            match a.sub(command)? {
                "dropall" => Some(RESET),
                // `updateSQL`, `rollbackSQL`, `update-sql` print the SQL instead of running it.
                c if c.ends_with("sql") => Some(READ),
                "status" | "history" | "diff" | "validate" | "snapshot" => Some(READ),
                _ => Some(MIGRATE),
            }
        }
        "atlas" => {
            if op("schema") && op("clean") {
                Some(RESET)
            } else if op("schema") && op("apply") || op("migrate") && (op("apply") || op("down")) {
                Some(MIGRATE)
            } else if op("inspect") || op("status") || op("lint") || op("version") {
                Some(READ)
            } else if op("diff") || op("new") || op("hash") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "dbmate" => {
            if op("drop") {
                Some(RESET)
            } else if op("rollback") || op("down") || op("up") || op("migrate") {
                Some(MIGRATE)
            } else if op("create") {
                Some(SEED)
            } else if op("status") || op("wait") {
                Some(READ)
            } else if op("new") || op("dump") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "sqitch" => {
            // `sqitch revert [target]` without a change to stop at reverts every change; a
            // change is given with `--to` or as a spec (`@HEAD^`, `change@tag`).
            let to_change = a.flag(&["--to", "--to-change"])
                || a.ops
                    .iter()
                    .any(|o| o.contains(['@', '^']) && !o.starts_with("db:"));
            if op("revert") && !to_change {
                Some(RESET)
            } else if op("revert") || op("deploy") || op("rebase") || op("checkout") {
                Some(MIGRATE)
            } else if op("status") || op("log") || op("verify") || op("plan") || op("show") {
                Some(READ)
            } else if op("add") || op("init") || op("rework") || op("bundle") {
                Some(LOCAL)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Doctrine's commands in a Symfony console (`bin/console doctrine:schema:drop --force`).
/// Without `--force` the dropping and updating commands only print what they would do.
fn doctrine(a: &Args<'_>, v: &mut Verdict) -> Option<Rating> {
    let force = a.flag(&["--force", "-f"]);
    let sub = a.sub(|o| o.contains(':'))?;
    match sub {
        "doctrine:database:drop" | "doctrine:schema:drop" => Some(if force { RESET } else { READ }),
        "doctrine:schema:update" => Some(if force { MIGRATE } else { READ }),
        "doctrine:schema:create" => Some(MIGRATE),
        // `migrate first` reverts every migration.
        "doctrine:migrations:migrate" if a.ops.contains(&"first") => Some(RESET),
        "doctrine:migrations:migrate"
        | "doctrine:migrations:execute"
        | "doctrine:migrations:rollup" => Some(MIGRATE),
        // Purges every table first unless told to append.
        "doctrine:fixtures:load" => Some(if a.flag(&["--append"]) { SEED } else { RESET }),
        "doctrine:query:sql" | "dbal:runsql" => {
            let at = a
                .rest
                .iter()
                .position(|w| w.to_ascii_lowercase().replace(['-', '_'], "") == sub);
            match at.and_then(|i| a.rest.get(i + 1)) {
                Some(q) => crate::classify::sql::apply(q, SqlDialect::Generic, v),
                None => v.raise(Tier::T4, "shell.sql_unknown_input"),
            }
            Some(READ)
        }
        "doctrine:database:create" => Some(SEED),
        s if s.starts_with("doctrine:migrations:")
            && ["status", "list", "current", "latest", "uptodate"]
                .iter()
                .any(|k| s.ends_with(k)) =>
        {
            Some(READ)
        }
        s if s.starts_with("doctrine:migrations:") || s.starts_with("make:") => Some(LOCAL),
        s if s.starts_with("cache:") || s.starts_with("debug:") || s.starts_with("lint:") => {
            Some(LOCAL)
        }
        _ => None,
    }
}

fn prisma(a: &Args<'_>, stdin: &Stdin<'_>, v: &mut Verdict) -> Option<Rating> {
    let op = |w: &str| a.op(w);
    if op("migrate") && op("reset")
        || op("push") && a.flag(&["--force-reset", "--accept-data-loss"])
    {
        Some(RESET)
    } else if op("db") && op("execute") {
        // The SQL comes from standard input or a file.
        if a.flag(&["--stdin"]) {
            sql_stdin(SqlDialect::Generic, stdin, v);
            Some(MIGRATE)
        } else {
            Some(SQL_FILE)
        }
    } else if op("migrate") && op("dev") && a.flag(&["--create-only"]) {
        Some(LOCAL)
    } else if op("migrate") && (op("deploy") || op("dev") || op("resolve"))
        || op("db") && op("push")
    {
        Some(MIGRATE)
    } else if op("db") && op("seed") {
        Some(SEED)
    } else if op("migrate") && (op("status") || op("diff"))
        || op("db") && op("pull")
        || op("validate")
        || op("version")
        || op("studio")
    {
        Some(READ)
    } else if op("generate") || op("format") || op("init") {
        Some(LOCAL)
    } else {
        None
    }
}

/// `--to 0` (or `--to=0`): migrating down to before the first migration.
fn to_zero(a: &Args<'_>) -> bool {
    option_values(a.rest, &[], &["--to"])
        .iter()
        .any(|n| n.parse::<u64>().ok() == Some(0))
}

/// Alembic, and Flask-Migrate's `flask db` (whose `downgrade` defaults to one revision back).
fn alembic(a: &Args<'_>, flask: bool) -> Option<Rating> {
    let op = |w: &str| a.op(w);
    if a.flag(&["--sql"]) {
        // Offline mode prints the SQL.
        return Some(READ);
    }
    if op("downgrade") {
        // The target: the first word after `downgrade` that is not an option or an option's
        // value (`-x env=prod`, `--tag x`).
        let at = a
            .rest
            .iter()
            .position(|w| w == "downgrade")
            .map_or(0, |i| i + 1);
        let mut target = None;
        let mut i = at;
        while let Some(w) = a.rest.get(i) {
            if matches!(
                w.as_str(),
                "-x" | "--tag" | "-c" | "--config" | "-n" | "--name"
            ) {
                i += 2;
            } else if w.starts_with("--") {
                i += 1;
            } else {
                target = Some(w.as_str());
                break;
            }
        }
        return Some(match target {
            Some("base") => RESET,
            None if !flask => RESET,
            _ => MIGRATE,
        });
    }
    if op("upgrade") {
        Some(MIGRATE)
    } else if op("stamp") {
        Some(SEED)
    } else if ["current", "history", "heads", "show", "branches", "check"]
        .iter()
        .any(|w| op(w))
    {
        Some(READ)
    } else if op("revision") || op("init") || op("merge") || op("edit") || op("migrate") {
        // `flask db migrate` autogenerates a revision file; it does not touch the database.
        Some(LOCAL)
    } else {
        None
    }
}

/// One Rails or Rake task, also in its per-database form (`db:schema:load:primary`).
fn rails_task(task: &str, version_zero: bool) -> Option<Rating> {
    let rated = |t: &str| -> Option<Rating> {
        Some(match t {
            t if t.starts_with("db:test:") => LOCAL,
            // `db:migrate VERSION=0` (also per database, `db:migrate:primary`) reverts every
            // migration.
            t if version_zero && (t.starts_with("db:migrate") && t != "db:migrate:status") => RESET,
            "db:drop" | "db:drop:all" | "db:drop:_unsafe" | "db:reset" | "db:reset:all"
            | "db:purge" | "db:purge:all" | "db:schema:load" | "db:structure:load"
            | "db:truncate_all" | "db:seed:replant" | "db:migrate:reset" | "db:setup"
            | "db:setup:all" => RESET,
            "db:fixtures:load" => LOAD,
            "db:migrate:status" | "db:version" | "db:abort_if_pending_migrations" => READ,
            // Write the schema or its cache to a file of the project.
            "db:schema:cache:dump" | "db:schema:dump" | "db:structure:dump" => LOCAL,
            "db:schema:cache:clear" => LOCAL,
            t if t.starts_with("db:migrate") => MIGRATE,
            "db:rollback" | "db:prepare" | "db:forward" | "db:environment:set" => MIGRATE,
            "db:seed" | "db:create" | "db:create:all" => SEED,
            _ => return None,
        })
    };
    rated(task).or_else(|| {
        // `db:rollback:primary`: the task for one database of a multi-database app.
        let (base, _) = task.rsplit_once(':')?;
        base.contains(':').then(|| rated(base)).flatten()
    })
}

/// Rails and Rake tasks; several may follow one another (`rake db:drop db:create`).
fn rails(a: &Args<'_>, stdin: &Stdin<'_>, d: usize, v: &mut Verdict) -> Option<Rating> {
    let Some(first) = a.ops.first() else {
        // `rake` alone runs the default task.
        return Some(LOCAL);
    };
    match *first {
        "new" | "generate" | "g" | "destroy" | "server" | "s" | "test" | "t" | "about"
        | "assets:precompile" => return Some(LOCAL),
        "console" | "c" => return Some(console(stdin, d, v)),
        "runner" | "r" => {
            // Ruby code or a script file.
            if let Some(code) = a.ops.get(1) {
                app_code(code, d, v);
            }
            return Some(CODE);
        }
        "dbconsole" | "db" => {
            sql_stdin(SqlDialect::Generic, stdin, v);
            return Some(MIGRATE);
        }
        _ => {}
    }
    let version_zero = a.rest.iter().any(|w| w == "VERSION=0");
    let mut worst: Option<Rating> = None;
    for task in a.ops.iter().filter(|t| t.contains(':') && !t.contains('=')) {
        let rated = rails_task(task, version_zero).unwrap_or_else(|| {
            names::apply(task, v);
            LOCAL
        });
        v.raise(rated.0, rated.1);
        if worst.is_none_or(|(tier, _)| rated.0 > tier) {
            worst = Some(rated);
        }
    }
    worst.or_else(|| {
        // Tasks without a namespace (`rake build`): named by their words.
        for t in a.ops.iter().take(4) {
            names::apply(t, v);
        }
        Some(LOCAL)
    })
}

/// Django's management commands.
fn django(a: &Args<'_>, stdin: &Stdin<'_>, d: usize, v: &mut Verdict) -> Option<Rating> {
    const COMMANDS: &[&str] = &[
        "flush",
        "resetdb",
        "resetschema",
        "dropdb",
        "migrate",
        "loaddata",
        "createcachetable",
        "createsuperuser",
        "changepassword",
        "clearsessions",
        "dbshell",
        "shell",
        "showmigrations",
        "sqlmigrate",
        "sqlflush",
        "sqlsequencereset",
        "check",
        "inspectdb",
        "diffsettings",
        "dumpdata",
        "help",
        "version",
        "makemigrations",
        "squashmigrations",
        "collectstatic",
        "startapp",
        "startproject",
        "test",
        "runserver",
        "compilemessages",
        "makemessages",
    ];
    match a.sub(|o| COMMANDS.contains(&o))? {
        "flush" | "resetdb" | "resetschema" | "dropdb" => Some(RESET),
        // `migrate APP zero` unapplies every migration of the app: its tables are dropped.
        "migrate" if a.flag(&["--plan", "--check"]) => Some(READ),
        "migrate" if a.ops.contains(&"zero") => Some(RESET),
        "migrate" => Some(MIGRATE),
        "loaddata" => Some(LOAD),
        "createcachetable" | "createsuperuser" | "changepassword" | "clearsessions" => Some(SEED),
        "dbshell" => {
            sql_stdin(SqlDialect::Generic, stdin, v);
            Some(MIGRATE)
        }
        "shell" => {
            let code = option_values(a.rest, &["-c"], &["--command"]);
            if code.is_empty() {
                return Some(console(stdin, d, v));
            }
            for c in code {
                app_code(c, d, v);
            }
            Some(CODE)
        }
        "makemigrations" | "squashmigrations" | "collectstatic" | "startapp" | "startproject"
        | "test" | "runserver" | "compilemessages" | "makemessages" => Some(LOCAL),
        _ => Some(READ),
    }
}

/// Laravel's `artisan`.
fn artisan(a: &Args<'_>, stdin: &Stdin<'_>, d: usize, v: &mut Verdict) -> Option<Rating> {
    const PLAIN: &[&str] = &[
        "migrate", "db", "tinker", "serve", "test", "optimize", "list", "about", "inspire",
    ];
    let sub = a.sub(|o| o.contains(':') || PLAIN.contains(&o))?;
    if sub.starts_with("migrate") && a.flag(&["--pretend"]) {
        // Prints the SQL instead of running it.
        return Some(READ);
    }
    match sub {
        "migrate:fresh" | "migrate:reset" | "migrate:refresh" | "db:wipe" => Some(RESET),
        "migrate" | "migrate:rollback" | "migrate:install" => Some(MIGRATE),
        "db:seed" => Some(SEED),
        "db" => {
            sql_stdin(SqlDialect::Generic, stdin, v);
            Some(MIGRATE)
        }
        "tinker" => {
            let code = option_values(a.rest, &[], &["--execute"]);
            if code.is_empty() {
                return Some(console(stdin, d, v));
            }
            for c in code {
                app_code(c, d, v);
            }
            Some(CODE)
        }
        "migrate:status" | "route:list" | "about" | "list" | "inspire" | "db:show" | "db:table"
        | "db:monitor" | "schedule:list" | "event:list" => Some(READ),
        // Every pending job of the queue (in Redis or a table) is deleted.
        "queue:clear" | "queue:flush" | "queue:prunefailed" => Some(LOAD),
        "serve" | "test" | "optimize" | "key:generate" | "storage:link" | "vendor:publish"
        | "queue:work" | "queue:listen" => Some(LOCAL),
        s if s.starts_with("make:")
            || s.ends_with(":clear")
            || s.ends_with(":cache")
            || s.starts_with("optimize:") =>
        {
            Some(LOCAL)
        }
        _ => None,
    }
}

/// Elixir's `mix`: one task, a `do` list of tasks (`mix do ecto.drop, ecto.create`), or
/// `mix cmd` running a command.
fn mix(a: &Args<'_>, stdin: &Stdin<'_>, d: usize, v: &mut Verdict) -> Option<Rating> {
    let Some(first) = a.ops.first() else {
        // `mix` alone runs the default task (compile).
        return Some(LOCAL);
    };
    if *first == "cmd" {
        let at = a.rest.iter().position(|w| w == "cmd").map_or(0, |i| i + 1);
        if at < a.rest.len() {
            command(&a.rest[at..], stdin, d, v);
        }
        return Some(LOCAL);
    }
    let tasks: Vec<&str> = if *first == "do" {
        // `mix do a, b` (older) and `mix do a + b` (newer): each task's first word.
        let at = a.rest.iter().position(|w| w == "do").map_or(0, |i| i + 1);
        a.rest[at..]
            .iter()
            .flat_map(|w| w.split([',', '+']))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.starts_with('-'))
            .collect()
    } else {
        vec![*first]
    };
    let mut worst: Option<Rating> = None;
    for task in tasks {
        let rated = match task {
            "ecto.drop" | "ecto.reset" => RESET,
            "ecto.rollback" if a.flag(&["--all"]) || to_zero(a) => RESET,
            "ecto.rollback" | "ecto.migrate" | "ecto.load" | "ecto.setup" => MIGRATE,
            "ecto.create" => SEED,
            "ecto.migrations" => READ,
            "ecto.gen.migration" | "ecto.dump" => LOCAL,
            "hex.publish" => PUBLISH,
            "hex.retire" | "hex.revert" => UNPUBLISH,
            "run" => {
                // `mix run -e CODE` or a script file.
                let code = option_values(a.rest, &["-e"], &["--eval"]);
                for c in &code {
                    app_code(c, d, v);
                }
                if code.is_empty() { SCRIPT } else { CODE }
            }
            // Other tasks build, test and fetch (`mix compile`, `mix test`, `mix deps.get`),
            // named by their words (`mix my_app.wipe_db`).
            t => {
                names::apply(t, v);
                LOCAL
            }
        };
        v.raise(rated.0, rated.1);
        if worst.is_none_or(|(tier, _)| rated.0 > tier) {
            worst = Some(rated);
        }
    }
    worst
}

/// Code run inside the application (a Rails runner, Django's shell, Tinker, `mix run -e`): the
/// inline-code rules, the name heuristics over its words (`User.destroy_all`), and the SQL
/// rules over its strings (`connection.execute("DROP SCHEMA public CASCADE")`).
fn app_code(code: &str, d: usize, v: &mut Verdict) {
    inline_code(code, d, v);
    names::apply(code, v);
    for literal in code_literals(code) {
        crate::classify::sql::apply_if_sql(&literal, v);
    }
}

/// An application console (the Rails console, Django's shell, Tinker): what is typed at a
/// terminal is the user's; code on standard input is read as [`app_code`]; input we cannot
/// see fails closed.
fn console(stdin: &Stdin<'_>, d: usize, v: &mut Verdict) -> Rating {
    match stdin {
        Stdin::Text(code) => app_code(code, d, v),
        Stdin::Terminal => {}
        Stdin::Network => v.raise(Tier::T4, "shell.pipe_download_to_shell"),
        Stdin::Unknown | Stdin::Found(_) | Stdin::Listed(_) => {
            v.raise(Tier::T4, "shell.shell_unknown_input")
        }
    }
    CODE
}

/// A project script or task (`npm run migrate:fresh`, `make drop-db`, `gradle flywayClean`):
/// its name is all we see of it. Names that reset a database in the vocabulary of the tools
/// above are tier 4 (`shell.db_reset`), names that migrate one tier 3 (`shell.db_migrate`);
/// the name heuristics rate the others.
pub(super) fn script_name(name: &str, v: &mut Verdict) {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |these: &[&str]| words.iter().any(|w| these.contains(w));
    // Data stores themselves, and the tools that manage their schemas.
    let store = has(&[
        "db",
        "database",
        "databases",
        "pg",
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "mongo",
        "mongodb",
        "redis",
        "sqlite",
        "supabase",
        "volume",
        "volumes",
        "backup",
        "backups",
    ]);
    let tool = has(&[
        "migrate",
        "migration",
        "migrations",
        "schema",
        "prisma",
        "typeorm",
        "sequelize",
        "knex",
        "drizzle",
        "ecto",
        "flyway",
        "liquibase",
    ]);
    // Words that destroy whatever they name, and weaker ones (`clean`, `prune`, `down`) that
    // do only next to a data store (`npm run clean:prisma` deletes a generated client).
    let strong = has(&[
        "reset", "fresh", "refresh", "drop", "wipe", "purge", "truncate", "nuke", "flush",
        "recreate", "destroy", "erase",
    ]) || has(&["all"]) && has(&["undo", "rollback", "down", "revert"]);
    // (`db:down` usually stops the database's container and keeps its volume.)
    let weak = has(&["clean", "rebuild", "teardown", "prune", "delete", "remove"])
        || has(&["down"]) && has(&["volume", "volumes"]);
    // `gradle flywayClean`, `mvn liquibase:dropAll`: plugin goals written as one word.
    let plugin_reset = words
        .iter()
        .any(|w| matches!(*w, "flywayclean" | "dropall" | "liquibasedropall"))
        || has(&["flyway"]) && has(&["clean"]);
    let plugin_migrate = words.iter().any(|w| {
        matches!(
            *w,
            "flywaymigrate" | "flywayrepair" | "flywayundo" | "liquibaseupdate"
        )
    }) || has(&["liquibase"]) && has(&["update", "rollback"]);
    // A verb that applies schema changes (`make migrations` without one usually writes a
    // migration file).
    let migrates = has(&[
        "migrate",
        "rollback",
        "downgrade",
        "upgrade",
        "deploy",
        "push",
        "sync",
    ]) && (store || tool)
        && !has(&[
            "status",
            "create",
            "generate",
            "gen",
            "codegen",
            "typegen",
            "types",
            "new",
            "make",
            "list",
            "info",
            "check",
            "test",
            "tests",
            "lint",
            "pull",
            "introspect",
        ]);
    if plugin_reset || strong && (store || tool) || weak && store {
        v.raise(RESET.0, RESET.1);
    } else if has(&["restore", "import", "load"]) && store {
        // Replaces what the store holds with a dump.
        v.raise(LOAD.0, LOAD.1);
    } else if migrates || plugin_migrate {
        v.raise(MIGRATE.0, MIGRATE.1);
    } else if has(&["seed", "setup", "init", "create"]) && store {
        v.raise(SEED.0, SEED.1);
    }
    // The name heuristics, for what they say with a critical noun (`delete:backups`); a
    // destructive verb alone in a script's name (`purge:css`, `cache:purge`) is local as
    // often as not.
    if names::scan(name) == (true, true) {
        v.raise(Tier::T4, names::RULE_DESTRUCTIVE_CRITICAL);
    }
}
